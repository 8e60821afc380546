#!/bin/sh
# Report filesystem usage; fail when any filesystem is fuller than $1 percent (default 90).
limit=${1:-90}
df -P -x tmpfs -x devtmpfs -x proc | awk -v limit="$limit" '
  NR > 1 { use = $5; sub("%", "", use); print $6, use "%"; if (use + 0 > limit) bad = 1 }
  END { exit bad }'
