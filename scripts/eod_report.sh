#!/bin/sh
# End of day, branch "reports" (batch hosts): write the day's payments report.
# Usage: eod_report.sh DATE PAYMENTS TOTAL_CENTS SETTLEMENT_SHA256 (the reconciliation's
# figures, passed on by the flow). Writes /srv/eod/DATE/report.txt and prints its sha256.
set -eu
[ $# -eq 4 ] || { echo "usage: eod_report.sh DATE PAYMENTS TOTAL_CENTS SHA256" >&2; exit 64; }
date_=$1 payments=$2 total=$3 sha=$4
case "$date_" in
    [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
    *) echo "bad business date: '$date_'" >&2; exit 64 ;;
esac
case "$payments$total" in
    "" | *[!0-9-]*) echo "bad totals: '$payments' '$total'" >&2; exit 64 ;;
esac
case "$sha" in
    "" | *[!0-9a-f]*) echo "bad checksum: '$sha'" >&2; exit 64 ;;
esac
work=/srv/eod/$date_
mkdir -p "$work"
report=$work/report.txt
{
    echo "Payments report for $date_"
    echo "payments: $payments"
    echo "total_cents: $total"
    echo "settlement sha256: $sha"
} >"$report.tmp"
# Run again with the same figures: the report is already there, nothing to change.
if cmp -s "$report.tmp" "$report" 2>/dev/null; then
    rm -f "$report.tmp"
    echo "report_sha256=$(sha256sum "$report" | cut -d' ' -f1)"
    exit 0
fi
echo "started=$(date -u +%s.%N)" >"$work/report.marks"
# Hold the host a moment, as a real report run does: the start/end marks of the two
# branches then show that they overlapped (tests/integration/test_end_of_day.py).
sleep 3
mv "$report.tmp" "$report"
echo "finished=$(date -u +%s.%N)" >>"$work/report.marks"
echo "report_sha256=$(sha256sum "$report" | cut -d' ' -f1)"
echo FLEETFLOW_CHANGED
