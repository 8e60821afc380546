#!/bin/sh
# End of day, branch "archive" (web hosts): archive the day's logs.
# Usage: eod_archive.sh DATE. Packs /var/log/fleetflow into
# /srv/eod/archive/logs-DATE.tar.gz, writes its sha256 beside it and prints it.
set -eu
date_=${1:-}
case "$date_" in
    [0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
    *) echo "bad business date: '$date_'" >&2; exit 64 ;;
esac
work=/srv/eod/$date_
mkdir -p "$work"
echo "started=$(date -u +%s.%N)" >"$work/archive.marks"
# See eod_report.sh: the marks of both branches must show that they overlapped.
sleep 3
archive_dir=/srv/eod/archive
mkdir -p "$archive_dir"
archive=$archive_dir/logs-$date_.tar.gz
tar -czf "$archive.tmp" -C /var/log fleetflow
mv "$archive.tmp" "$archive"
sha=$(sha256sum "$archive" | cut -d' ' -f1)
echo "$sha  logs-$date_.tar.gz" >"$archive.sha256"
echo "finished=$(date -u +%s.%N)" >>"$work/archive.marks"
echo "archive_sha256=$sha"
echo FLEETFLOW_CHANGED
