#!/usr/bin/env bash
# Install the Debian packages fleetflow needs on the controller (idempotent; needs root).
#   debootstrap        builds the lab hosts' base image
#   openssh-client     Ansible's transport
#   iptables           lab network fault injection
#   util-linux, mount  unshare, setsid, setpriv, mount for lab hosts and run isolation
#   chromium           the real-browser checks of the Prefect UI (tests/integration/test_ui.py),
#                      driven by Playwright at /usr/bin/chromium: Playwright's own browser
#                      download is not reachable here
#   prometheus, prometheus-alertmanager, prometheus-node-exporter
#                      the stack's monitoring (`monitoring: true`) and the promtool/amtool
#                      checks of deployments/monitoring. On a machine with systemd their
#                      packaged services start on :9090, :9093 and :9100; the stack never uses
#                      those: it runs its own copies on free loopback ports
#                      (`systemctl disable --now prometheus prometheus-alertmanager
#                      prometheus-node-exporter` if this machine should run none).
#   haproxy            the balancer in front of a scaled control plane's API replicas
#                      (`control_plane:` in the stack file); its packaged service has no
#                      listener, the stack runs its own with a configuration of its own
set -euo pipefail
packages=(debootstrap openssh-client iptables util-linux mount make chromium prometheus prometheus-alertmanager prometheus-node-exporter haproxy)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "missing packages: ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
