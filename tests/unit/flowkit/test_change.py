"""Plans: diffs rendered and censored, vaulted values found, the plan's markdown."""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetflow.engine._ansible import ansible_tool
from fleetflow.engine._collector import EventCollector
from fleetflow.engine._diff import censor, render_diff
from fleetflow.engine._vault import vaulted_values
from fleetflow.engine.secrets import MASK
from fleetflow.flowkit.change import MAX_DIFF_LINES, Approval, Decision, plan_markdown
from fleetflow.results import HostResult, HostStatus, PlaybookResult, RunStatus, TaskChange

from ..engine.test_attempts import result_event, stats

LOG = logging.getLogger("test")


def test_file_diff_is_unified_with_headers() -> None:
    text = render_diff(
        {"before": "a\nb\n", "after": "a\nc\n", "before_header": "/etc/x", "after_header": "/etc/x"}
    )
    assert text.splitlines()[:2] == ["--- before: /etc/x", "+++ after: /etc/x"]
    assert "-b" in text.splitlines() and "+c" in text.splitlines()


def test_prepared_skipped_and_structured_diffs() -> None:
    text = render_diff(
        [{"prepared": "The following packages will be installed: jq"}, {"dst_binary": 1}]
    )
    assert "packages will be installed: jq" in text
    assert "destination file appears to be binary" in text
    state = render_diff({"before": {"state": "absent"}, "after": {"state": "directory"}})
    assert '-    "state": "absent"' in state and '+    "state": "directory"' in state


@pytest.mark.parametrize(
    "line",
    [
        "+db_password: hunter2hunter2",
        '+  "api_key": "abcdef123456",',
        "+export APP_TOKEN=abcdef123456",
        "-secret = abcdef123456",
    ],
)
def test_secret_looking_settings_are_censored(line: str) -> None:
    out = censor(line)
    assert "hunter2" not in out and "abcdef123456" not in out and MASK in out


def test_private_key_blocks_are_censored_and_plain_lines_kept() -> None:
    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----"
    )
    assert "b3BlbnNz" not in censor(key)
    assert censor("+listen_port: 8080\n+owner: app") == "+listen_port: 8080\n+owner: app"


def test_collector_keeps_changed_tasks_and_diffs_only_when_asked() -> None:
    events = [
        result_event(
            "runner_on_ok",
            "a",
            task="Write config",
            changed=True,
            diff={"before": "x\n", "after": "y\n"},
        ),
        result_event("runner_on_ok", "a", task="Read config", changed=False),
        result_event(
            "runner_on_ok",
            "b",
            task="Loop",
            changed=True,
            results=[{"diff": {"before": "", "after": "1\n"}}, {"changed": False}],
        ),
        stats(a={"ok": 2, "changed": 1}, b={"ok": 1, "changed": 1}),
    ]
    recording = EventCollector(("a", "b"), 2, LOG, record_changes=True)
    plain = EventCollector(("a", "b"), 2, LOG)
    for event in events:
        recording(event)
        plain(event)
    results = recording.host_results()
    assert [c.task for c in results["a"].changes] == ["Write config"]
    assert "+y" in results["a"].changes[0].diff
    assert "+1" in results["b"].changes[0].diff
    assert all(not r.changes for r in plain.host_results().values())


def _plan(**changes: list[TaskChange]) -> PlaybookResult:
    now = datetime.now(UTC)
    hosts = {
        h: HostResult(
            host=h,
            status=HostStatus.CHANGED if c else HostStatus.OK,
            ok=1,
            changed=len(c),
            changes=c,
        )
        for h, c in changes.items()
    }
    return PlaybookResult(playbook="/p/playbooks/site.yml", inventory="/p/inventory/lab",
                          status=RunStatus.SUCCESSFUL, hosts=hosts, rc=0, started_at=now,
                          finished_at=now, check=True)  # fmt: skip


def test_plan_markdown_lists_hosts_and_diffs() -> None:
    plan = _plan(web=[TaskChange(task="Write motd", diff="--- before\n+++ after\n+hi")], db=[])
    text = plan_markdown(plan)
    assert text.startswith("# Plan: site on lab")
    assert "| web | changed | 1 |" in text and "| db | ok | 0 |" in text
    assert "## web" in text and "### Write motd" in text and "```diff\n--- before" in text
    assert "## db" not in text
    assert "1 changed, 1 ok" in text and "nothing would change" not in text


def test_plan_markdown_cuts_long_diffs() -> None:
    diff = "\n".join(f"+line {n}" for n in range(MAX_DIFF_LINES + 50))
    text = plan_markdown(_plan(web=[TaskChange(task="Big", diff=diff)]))
    assert f"+line {MAX_DIFF_LINES - 1}" in text and f"+line {MAX_DIFF_LINES}\n" not in text
    assert "50 more lines not shown" in text


def test_approval_form_is_typed() -> None:
    answer = Approval(decision="approve", approver="alice", comment="ok")  # type: ignore[arg-type]
    assert answer.decision is Decision.APPROVE
    with pytest.raises(ValueError):
        Approval(decision="maybe", approver="alice")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Approval(decision="approve", approver="")  # type: ignore[arg-type]


def test_vaulted_values_from_whole_files_and_inline(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("vault-pass-1")
    inventory = tmp_path / "inventory" / "group_vars" / "all"
    inventory.mkdir(parents=True)
    whole = inventory / "vault.yml"
    whole.write_text("vault_db_password: s3cr3t-db-pass\nvault_short: abc\n")
    subprocess.run([ansible_tool("ansible-vault"), "encrypt", "--vault-password-file",
                    str(password_file), str(whole)], check=True, capture_output=True)  # fmt: skip
    inline = subprocess.run(
        [ansible_tool("ansible-vault"), "encrypt_string", "--vault-password-file",
         str(password_file), "inline-token-value", "--name", "api_token"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    (inventory / "main.yml").write_text(f"plain: visible-value\n{inline}")
    found = vaulted_values([tmp_path / "inventory", tmp_path / "missing"], "vault-pass-1")
    assert "s3cr3t-db-pass" in found and "inline-token-value" in found
    assert "abc" not in found and "visible-value" not in found  # short; not vaulted
    assert vaulted_values([tmp_path / "inventory"], "wrong password") == []
    # A named lab's (or a real environment's) group_vars may be a link to shared ones.
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "group_vars").symlink_to(tmp_path / "inventory" / "group_vars")
    linked = vaulted_values([tmp_path / "linked"], "vault-pass-1")
    assert "s3cr3t-db-pass" in linked and "inline-token-value" in linked
