"""Network faults for lab hosts: iptables DROP rules in one chain per lab."""

from __future__ import annotations

import subprocess

from fleetflow.exceptions import LabError
from fleetflow.lab._prereq import require_tool


def chain_name(lab: str) -> str:
    return f"FFLAB-{lab}"


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    iptables = require_tool("iptables", "iptables")
    # -w: wait for the xtables lock instead of failing when another rule change runs.
    proc = subprocess.run([iptables, "-w", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _ensure_chain(lab: str) -> str:
    chain = chain_name(lab)
    if _iptables("-n", "-L", chain, check=False).returncode != 0:
        _iptables("-N", chain)
    if _iptables("-C", "INPUT", "-j", chain, check=False).returncode != 0:
        _iptables("-I", "INPUT", "1", "-j", chain)
    return chain


def _rules(address: str) -> list[list[str]]:
    # Loopback traffic passes INPUT once per direction: drop both to and from the host.
    return [["-d", address, "-j", "DROP"], ["-s", address, "-j", "DROP"]]


def cut(lab: str, address: str) -> None:
    """Drop every packet to and from `address` (the host looks unplugged)."""
    chain = _ensure_chain(lab)
    for rule in _rules(address):
        if _iptables("-C", chain, *rule, check=False).returncode != 0:
            _iptables("-A", chain, *rule)


def restore(lab: str, address: str) -> None:
    """Undo `cut` for `address`."""
    chain = chain_name(lab)
    for rule in _rules(address):
        while _iptables("-C", chain, *rule, check=False).returncode == 0:
            _iptables("-D", chain, *rule)


def is_cut(lab: str, address: str) -> bool:
    chain = chain_name(lab)
    if _iptables("-n", "-L", chain, check=False).returncode != 0:
        return False
    return _iptables("-C", chain, *_rules(address)[0], check=False).returncode == 0


def remove_chain(lab: str) -> None:
    """Remove the lab's chain and its jump; a no-op when there is none."""
    chain = chain_name(lab)
    if _iptables("-n", "-L", chain, check=False).returncode != 0:
        return
    while _iptables("-C", "INPUT", "-j", chain, check=False).returncode == 0:
        _iptables("-D", "INPUT", "-j", chain)
    _iptables("-F", chain)
    _iptables("-X", chain)


def chain_exists(lab: str) -> bool:
    return _iptables("-n", "-L", chain_name(lab), check=False).returncode == 0
