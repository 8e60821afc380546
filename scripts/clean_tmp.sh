#!/bin/sh
# Delete files under /tmp not modified for $1 days (default 7). Prints FLEETFLOW_CHANGED
# when it deleted something, so the run reports a change only then.
days=${1:-7}
count=$(find /tmp -xdev -type f -mtime +"$days" -print -delete | wc -l)
echo "deleted $count files older than $days days"
[ "$count" -gt 0 ] && echo FLEETFLOW_CHANGED
exit 0
