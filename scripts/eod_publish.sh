#!/bin/sh
# End of day, last step (db hosts), run only when both branches succeeded: write the
# day's summary and its "done" marker, which downstream systems wait for.
# Usage: eod_publish.sh DATE REPORT_SHA256 ARCHIVE_SHA256.
set -eu
[ $# -eq 3 ] || { echo "usage: eod_publish.sh DATE REPORT_SHA256 ARCHIVE_SHA256" >&2; exit 64; }
date_=$1
case "$date_" in
    [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
    *) echo "bad business date: '$date_'" >&2; exit 64 ;;
esac
for sha in "$2" "$3"; do
    case "$sha" in
        "" | *[!0-9a-f]*) echo "bad checksum: '$sha'" >&2; exit 64 ;;
    esac
done
work=/srv/eod/$date_
[ -r "$work/reconciliation.txt" ] || { echo "not reconciled: $work/reconciliation.txt" >&2; exit 66; }
{
    cat "$work/reconciliation.txt"
    echo "report_sha256=$2"
    echo "archive_sha256=$3"
} >"$work/summary.txt.tmp"
# Published already with the same figures: nothing to change.
if [ -e "$work/done" ] && cmp -s "$work/summary.txt.tmp" "$work/summary.txt" 2>/dev/null; then
    rm -f "$work/summary.txt.tmp"
    cat "$work/summary.txt"
    exit 0
fi
echo "started=$(date -u +%s.%N)" >"$work/publish.marks"
mv "$work/summary.txt.tmp" "$work/summary.txt"
date -u +%FT%TZ >"$work/done"
echo "finished=$(date -u +%s.%N)" >>"$work/publish.marks"
cat "$work/summary.txt"
echo FLEETFLOW_CHANGED
