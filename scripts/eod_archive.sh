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
archive_dir=/srv/eod/archive
archive=$archive_dir/logs-$date_.tar.gz
# The day's logs are archived once: run again, the archive and its checksum stand.
if [ -s "$archive" ] && (cd "$archive_dir" && sha256sum -c --status "logs-$date_.tar.gz.sha256") 2>/dev/null; then
    echo "archive_sha256=$(cut -d' ' -f1 "$archive.sha256")"
    exit 0
fi
echo "started=$(date -u +%s.%N)" >"$work/archive.marks"
# See eod_report.sh: the marks of both branches must show that they overlapped.
sleep 3
mkdir -p "$archive_dir"
tar -czf "$archive.tmp" -C /var/log fleetflow
mv "$archive.tmp" "$archive"
sha=$(sha256sum "$archive" | cut -d' ' -f1)
echo "$sha  logs-$date_.tar.gz" >"$archive.sha256"
echo "finished=$(date -u +%s.%N)" >>"$work/archive.marks"
echo "archive_sha256=$sha"
echo FLEETFLOW_CHANGED
