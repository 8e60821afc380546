"""One lab host: an overlay root, private namespaces and sshd as the namespace's init."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetflow.exceptions import LabError

# Runs inside fresh mount/UTS/PID namespaces (controller's /bin/sh, before chroot).
# The overlay and /proc are mounted in the host's private mount namespace, so they vanish
# with its last process and never appear in the controller's mount table.
# `read < /proc/self/stat` is a shell builtin reading the controller's procfs, so it gives
# this process's PID as the controller sees it; the process then becomes the host's init.
_START_SCRIPT = r"""
set -eu
lower=$1 upper=$2 work=$3 root=$4 name=$5 pidfile=$6
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
mount -t proc proc "$root/proc"
mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666,mode=0620
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
echo "$name" > /proc/sys/kernel/hostname
read -r self_stat < /proc/self/stat
echo "${self_stat%% *}" > "$pidfile.tmp"
mv "$pidfile.tmp" "$pidfile"
exec chroot "$root" /bin/sh -c '
  /usr/sbin/sshd -D -e & sshd=$!
  trap "kill -TERM $sshd 2>/dev/null" TERM INT
  wait $sshd'
"""


def _keypair() -> tuple[bytes, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode()


def write_private_key(path: Path, comment: str) -> str:
    """Write a new ed25519 key pair (0600 private, .pub beside it); return the public line."""
    private, public = _keypair()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    line = f"{public} {comment}"
    path.with_suffix(".pub").write_text(line + "\n")
    return line


@dataclass(frozen=True)
class HostSpec:
    """Identity of a lab host."""

    name: str
    address: str
    port: int


@dataclass(frozen=True)
class HostProcess:
    """The host's init process as the controller sees it (pid + start time guard reuse)."""

    pid: int
    start_time: int


def _sshd_config(spec: HostSpec) -> str:
    return (
        "# Written by fleetflow lab: key-only root login on this host's own address.\n"
        f"ListenAddress {spec.address}:{spec.port}\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        # Ansible multiplexes many sessions over one ControlPersist connection.
        "MaxSessions 100\n"
        "MaxStartups 100:30:200\n"
    )


def prepare_host(host_dir: Path, spec: HostSpec, authorized_key: str) -> str:
    """Create the host's writable layer; return its known_hosts line.

    Files go into the overlay's upper directory, which the host sees as its own /etc.
    """
    upper = host_dir / "upper"
    for sub in ("work", "root"):
        (host_dir / sub).mkdir(parents=True, exist_ok=True)
    etc = upper / "etc"
    (etc / "ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    host_key_line = write_private_key(etc / "ssh/ssh_host_ed25519_key", f"root@{spec.name}")
    (etc / "ssh/sshd_config.d/fleetflow.conf").write_text(_sshd_config(spec))
    (etc / "hostname").write_text(spec.name + "\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n{spec.address}\t{spec.name}\n::1\tlocalhost ip6-localhost\n"
    )
    ssh_dir = upper / "root/.ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ssh_dir.chmod(0o700)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(authorized_key + "\n")
    authorized.chmod(0o600)
    trust_controller_cas(upper)
    key_type, key_data = host_key_line.split()[:2]
    return f"{spec.address} {key_type} {key_data}"


_SYSTEM_BUNDLE = "etc/ssl/certs/ca-certificates.crt"


def controller_ca_bundle() -> Path | None:
    """The CA bundle this machine's TLS clients trust (SSL_CERT_FILE, else OpenSSL's)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def trust_controller_cas(upper: Path) -> None:
    """Make the controller's CA bundle the host's system bundle.

    A lab host must reach TLS services as the controller does, a TLS-intercepting proxy
    included (pip inside a host failed with CERTIFICATE_VERIFY_FAILED). The image has no
    ca-certificates package: the bundle goes where Debian's would be, OpenSSL's default
    paths point at it (as Debian's openssl package links them), and a copy under
    /usr/local/share/ca-certificates survives update-ca-certificates should a playbook
    install the package. pip brings its own CAs: /etc/pip.conf points it at the bundle.
    """
    bundle = controller_ca_bundle()
    if bundle is None:
        return
    system = upper / _SYSTEM_BUNDLE
    system.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle, system)
    system.chmod(0o644)
    local = upper / "usr/local/share/ca-certificates"
    local.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle, local / "fleetflow-controller.crt")
    openssl = upper / "usr/lib/ssl"
    openssl.mkdir(parents=True, exist_ok=True)
    for name, target in (("cert.pem", f"/{_SYSTEM_BUNDLE}"), ("certs", "/etc/ssl/certs")):
        if not (openssl / name).is_symlink():
            (openssl / name).symlink_to(target)
    (upper / "etc/pip.conf").write_text(f"[global]\ncert = /{_SYSTEM_BUNDLE}\n")


def start_host(host_dir: Path, lower: Path, spec: HostSpec) -> HostProcess:
    """Start the host's namespaces and sshd, detached from the caller's session."""
    pidfile = host_dir / "init.pid"
    pidfile.unlink(missing_ok=True)
    args = [str(lower), str(host_dir / "upper"), str(host_dir / "work"), str(host_dir / "root")]
    with (host_dir / "console.log").open("ab") as log:
        subprocess.run(
            # setsid -f: the host outlives the `fleetflow lab up` process that started it.
            # --kill-child: killing unshare also kills the host.
            [
                "setsid",
                "-f",
                "unshare",
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--kill-child",
                "/bin/sh",
                "-c",
                _START_SCRIPT,
                "fleetflow-lab-host",
                *args,
                spec.name,
                str(pidfile),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=True,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pidfile.exists():
            pid = int(pidfile.read_text())
            start = _start_time(pid)
            if start is not None:
                return HostProcess(pid, start)
        time.sleep(0.02)
    raise LabError(
        f"lab host {spec.name} did not start; see {host_dir / 'console.log'}:\n"
        + console_tail(host_dir)
    )


def console_tail(host_dir: Path, lines: int = 10) -> str:
    path = host_dir / "console.log"
    if not path.exists():
        return "(no console output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (comm) may hold spaces; everything after its closing paren is space separated.
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def process_state(proc: HostProcess) -> str | None:
    """The init's scheduler state letter (R, S, T, Z ...), or None if it is gone or reused."""
    fields = _stat_fields(proc.pid)
    if fields is None or int(fields[19]) != proc.start_time:
        return None
    return fields[0]


def is_alive(proc: HostProcess) -> bool:
    return process_state(proc) not in (None, "Z", "X")


def namespace_pids(proc: HostProcess) -> list[int]:
    """PIDs (as the controller sees them) of every process inside the host."""
    try:
        target = os.readlink(f"/proc/{proc.pid}/ns/pid")
    except OSError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns/pid") == target:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def signal_host(proc: HostProcess, sig: signal.Signals) -> None:
    """Send `sig` to every process of the host (SIGKILL to init alone ends them all)."""
    if not is_alive(proc):
        raise LabError(f"host process {proc.pid} is not running")
    if sig == signal.SIGKILL:
        os.kill(proc.pid, sig)
        return
    for pid in namespace_pids(proc):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue


def wait_stopped(proc: HostProcess, *, stopped: bool, timeout: float = 5.0) -> None:
    """Wait until the host's init shows (or no longer shows) as stopped: a signal takes
    effect when the process is next scheduled, which on a busy machine is not at once."""
    deadline = time.monotonic() + timeout
    while (process_state(proc) == "T") != stopped:
        if time.monotonic() > deadline:
            raise LabError(f"host process {proc.pid} did not {'stop' if stopped else 'resume'}")
        time.sleep(0.01)


def stop_host(proc: HostProcess, timeout: float = 10.0) -> None:
    """Kill the host; the kernel then kills its namespace and drops its mounts."""
    if not is_alive(proc):
        return
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while is_alive(proc):
        if time.monotonic() > deadline:
            raise LabError(f"host init {proc.pid} survived SIGKILL for {timeout} s")
        time.sleep(0.02)


def port_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
