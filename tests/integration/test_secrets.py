"""Secrets end to end: SSH key, become password and vault password from Prefect Secret
blocks; then the API and the disk are searched for every secret string."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client

from fleetflow.engine.run import resolve_hosts, run_playbook
from fleetflow.exceptions import ConfigurationError, InventoryError, PlaybookFailed
from fleetflow.lab import Lab
from fleetflow.results import PlaybookResult, RunStatus

from ..conftest import REPO
from .vault import vault_encrypt

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


@flow
def in_flow(playbook: str, inventory: str, **options: Any) -> PlaybookResult:
    return run_playbook(playbook, inventory=inventory, **options)


def _keyless_inventory(lab: Lab, tmp_path: Path) -> Path:
    """The lab's inventory without its key file: only a key given as a secret gets in."""
    inventory = tmp_path / "inventory"
    shutil.copytree(lab.inventory_dir, inventory)
    hosts = inventory / "hosts.yml"
    lines = hosts.read_text().splitlines()
    hosts.write_text("\n".join(ln for ln in lines if "ansible_ssh_private_key_file" not in ln))
    return inventory


def _vaulted_inventory(lab: Lab, tmp_path: Path, vault_password: str, token: str) -> Path:
    """The keyless inventory plus a vault-encrypted group_vars file."""
    inventory = _keyless_inventory(lab, tmp_path)
    (inventory / "group_vars" / "all").mkdir(parents=True)
    vaulted = inventory / "group_vars" / "all" / "vault.yml"
    vaulted.write_text(f"vault_token: {token}\n")
    vault_encrypt(vaulted, vault_password)
    assert token not in vaulted.read_text()
    return inventory


def _logging_in_as(inventory: Path, host: str, user: str, tmp_path: Path) -> Path:
    """A copy of `inventory` logging in to `host` as `user` (host_vars): connection
    variables are the inventory's to set, never a caller's extra_vars."""
    copied = tmp_path / f"inventory-{user}"
    shutil.copytree(inventory, copied)
    (copied / "host_vars").mkdir(exist_ok=True)
    (copied / "host_vars" / f"{host}.yml").write_text(f"ansible_user: {user}\n")
    return copied


def _files_containing(needles: list[bytes], roots: list[Path]) -> list[str]:
    hits = []
    for root in roots:
        for directory, _dirs, files in os.walk(root):
            if "/.venv" in directory or "/.git" in directory:
                continue
            for name in files:
                path = Path(directory) / name
                try:
                    if path.is_symlink() or path.stat().st_size > 20_000_000:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                hits += [f"{path}" for needle in needles if needle in data]
    return hits


def _api_text() -> str:
    """Every log line, artifact, flow and task run the server holds, as text."""
    with get_client(sync_client=True) as client:
        parts = [log.message for log in client.read_logs()]
        parts += [str(a.data) + str(a.description) for a in client.read_artifacts()]
        parts += [r.model_dump_json() for r in client.read_flow_runs()]
        parts += [t.model_dump_json() for t in client.read_task_runs()]
    return "\n".join(parts)


def test_every_secret_kind_is_used_and_found_nowhere(lab: Lab, tmp_path: Path) -> None:
    key = lab.key_path.read_text()
    become, vault, token = (secrets.token_urlsafe(18) for _ in range(3))
    Secret(value=key).save("ff-test-ssh-key", overwrite=True)
    Secret(value=become).save("ff-test-become", overwrite=True)
    Secret(value=vault).save("ff-test-vault", overwrite=True)
    inventory = _vaulted_inventory(lab, tmp_path, vault, token)
    result = in_flow(
        str(REPO / "tests/fixtures/playbooks/secrets.yml"),
        inventory=str(inventory),
        ssh_key_secret="ff-test-ssh-key",
        become_password_secret="ff-test-become",
        vault_password_secret="ff-test-vault",
    )
    assert result.status == RunStatus.SUCCESSFUL, result.message
    digest = hashlib.sha256(token.encode()).hexdigest()
    for host in lab.hosts():
        assert lab.ssh(host.name, "cat /root/ff-vault-digest").stdout.strip() == digest
    # become: log in as `ffbecome`, su to root with the become password from its block. (`-p '*'`:
    # no password, yet not locked - sshd without PAM refuses locked accounts.)
    host = lab.hosts()[0].name
    # A user of our own: roles may already own names like `ops` (as a group, here).
    setup = (
        "set -e; id ffbecome >/dev/null 2>&1 || useradd -m -s /bin/sh -p '*' ffbecome; "
        "mkdir -p ~ffbecome/.ssh; cp /root/.ssh/authorized_keys ~ffbecome/.ssh/; "
        "chown -R ffbecome ~ffbecome/.ssh; chpasswd"
    )
    # The password goes through stdin, never a command line.
    made = subprocess.run([*lab.ssh_args(host), setup], input=f"root:{become}\n",
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    as_ffbecome = str(_logging_in_as(inventory, host, "ffbecome", tmp_path))
    become_run = in_flow(
        str(REPO / "tests/fixtures/playbooks/become.yml"), inventory=as_ffbecome,
        limit=host, ssh_key_secret="ff-test-ssh-key", become_password_secret="ff-test-become",
        vault_password_secret="ff-test-vault",
    )  # fmt: skip
    assert become_run.hosts[host].outputs["user"] == "root"
    Secret(value="not-the-password").save("ff-test-wrong", overwrite=True)
    with pytest.raises(PlaybookFailed):  # the password really is what su checks
        in_flow(
            str(REPO / "tests/fixtures/playbooks/become.yml"), inventory=as_ffbecome,
            limit=host, ssh_key_secret="ff-test-ssh-key", become_password_secret="ff-test-wrong",
            vault_password_secret="ff-test-vault",
        )  # fmt: skip
    key_lines = [ln for ln in key.splitlines() if len(ln) >= 12 and "PRIVATE KEY" not in ln]
    needles = [become, vault, token, *key_lines]
    api = _api_text()
    assert [n for n in needles if n in api] == []
    roots = [Path("/tmp"), REPO, Path.home() / ".ansible"]
    assert _files_containing([n.encode() for n in needles], roots) == []


def test_a_vaulted_inventory_without_its_password_is_refused_before_any_host(
    lab: Lab, tmp_path: Path
) -> None:
    """Listing hosts does not open vaulted vars files, so the preflight passed, and
    ansible-playbook then exited 4 with every host skipped: a run once ended Completed."""
    Secret(value=lab.key_path.read_text()).save("ff-test-ssh-key", overwrite=True)
    inventory = _vaulted_inventory(lab, tmp_path, secrets.token_urlsafe(18), "t0ken-unused")
    for host in lab.hosts():
        lab.ssh(host.name, "rm -f /root/ff-vault-digest")
    # Asking which hosts a playbook would run on needs no password (flows do, before runs
    # that will have it).
    assert set(resolve_hosts.fn("ping", inventory=str(inventory))) == {h.name for h in lab.hosts()}
    expected = r"vault-encrypted file \(group_vars/all/vault.yml\).*vault_password_secret"
    with pytest.raises(InventoryError, match=expected):
        in_flow(
            str(REPO / "tests/fixtures/playbooks/secrets.yml"),
            inventory=str(inventory),
            ssh_key_secret="ff-test-ssh-key",
        )
    for host in lab.hosts():
        probe = lab.ssh(host.name, "test -e /root/ff-vault-digest || echo absent")
        assert probe.stdout == "absent\n"


def test_a_missing_secret_is_a_clear_error_before_any_host(lab: Lab) -> None:
    with pytest.raises(ConfigurationError, match=r"ff-no-such-secret.*FLEETFLOW_SECRET_FF_NO_SUCH"):
        in_flow("ping", inventory=str(lab.inventory_dir), ssh_key_secret="ff-no-such-secret")


def test_secret_from_the_environment_in_ci(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = str(_keyless_inventory(lab, tmp_path))
    with pytest.raises(PlaybookFailed):  # no key: the hosts refuse us
        in_flow("ping", inventory=inventory)
    monkeypatch.setenv("FLEETFLOW_SECRET_FF_ENV_KEY", lab.key_path.read_text())
    result = in_flow("ping", inventory=inventory, ssh_key_secret="ff-env-key")
    assert result.status == RunStatus.SUCCESSFUL


def test_no_log_failures_stay_censored(lab: Lab) -> None:
    sensitive = secrets.token_urlsafe(18)
    with pytest.raises(PlaybookFailed) as caught:
        in_flow(str(REPO / "tests/fixtures/playbooks/nolog_fail.yml"),
                inventory=str(lab.inventory_dir), extra_vars={"sensitive": sensitive})  # fmt: skip
    failure = next(iter(caught.value.result.hosts.values())).failure
    # Ansible's own censored text ("... 'no_log: true' was specified ..."), not the value.
    assert failure is not None and "no_log" in failure.message, failure
    assert sensitive not in caught.value.result.model_dump_json()
    logs = "\n".join(log.message for log in get_client(sync_client=True).read_logs())
    assert sensitive not in logs
