#!/bin/sh
# End of day, step 1 (db hosts): reconcile the settlement file of business date $1.
# Reads /srv/eod/inbox/settlement-DATE.csv (header, then "id,account,amount_cents" rows),
# refuses a malformed row, and writes /srv/eod/DATE/reconciliation.txt with the file's
# sha256, the number of payments and their total. Prints the same key=value lines: the
# flow hands them to the report and publish steps.
set -eu
date_=${1:-}
case "$date_" in
    [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
    *) echo "bad business date: '$date_'" >&2; exit 64 ;;
esac
settlement=/srv/eod/inbox/settlement-$date_.csv
work=/srv/eod/$date_
[ -r "$settlement" ] || { echo "no settlement file $settlement" >&2; exit 66; }
mkdir -p "$work"
totals=$(awk -F, '
    NR == 1 { next }
    NF != 3 || $3 !~ /^-?[0-9]+$/ { printf "line %d is not id,account,amount_cents\n", NR > "/dev/stderr"; bad = 1; exit }
    { n++; total += $3 }
    END { if (!bad) printf "payments=%d\ntotal_cents=%d\n", n, total; exit bad }' "$settlement")
sha=$(sha256sum "$settlement" | cut -d' ' -f1)
{
    echo "business_date=$date_"
    echo "settlement_sha256=$sha"
    echo "$totals"
} >"$work/reconciliation.txt.tmp"
# Run again for a date already reconciled from the same file: nothing to change.
if cmp -s "$work/reconciliation.txt.tmp" "$work/reconciliation.txt" 2>/dev/null; then
    rm -f "$work/reconciliation.txt.tmp"
    cat "$work/reconciliation.txt"
    exit 0
fi
echo "started=$(date -u +%s.%N)" >"$work/reconcile.marks"
mv "$work/reconciliation.txt.tmp" "$work/reconciliation.txt"
echo "finished=$(date -u +%s.%N)" >>"$work/reconcile.marks"
cat "$work/reconciliation.txt"
echo FLEETFLOW_CHANGED
