#!/bin/sh
# Check the host is fit for service: fails with the reason when /etc/fleetflow/unhealthy
# exists (operators or tests create it), else prints the load average.
if [ -e /etc/fleetflow/unhealthy ]; then
    echo "unhealthy: $(cat /etc/fleetflow/unhealthy)" >&2
    exit 3
fi
echo "healthy; load $(cut -d' ' -f1-3 /proc/loadavg)"
