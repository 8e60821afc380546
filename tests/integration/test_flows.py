"""The flows in flows/ against the lab, asserting what ends up on the hosts."""

from __future__ import annotations

from pathlib import Path

import pytest
from flows.rolling_update import rolling_update
from flows.run_script import run_script
from flows.runbook import runbook
from prefect.exceptions import ParameterTypeError
from pydantic import ValidationError

from fleetflow import ConfigurationError, HostStatus, PlaybookFailed
from fleetflow.flowkit.params import Step
from fleetflow.lab import Lab

from ..project import FIXTURE_PLAYBOOKS, make_project

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
CURRENT = "readlink /opt/payments-api/current"


@pytest.fixture(scope="module")
def project(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository the flows run in: the lab as environment `lab`, the test playbooks."""
    return make_project(tmp_path_factory.mktemp("project"), {"lab": lab.inventory_dir})


@pytest.fixture(autouse=True)
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETFLOW_PROJECT_DIR", str(project))


def test_run_script_collects_output_per_host_and_fails_the_broken_one(lab: Lab) -> None:
    inventory = "lab"
    broken = lab.hosts()[1].name
    for host in lab.hosts():  # earlier tests may have run this script already
        lab.ssh(host.name, "rm -f /var/log/fleetflow/scripts/service_check.sh.log")
    mark = "mkdir -p /etc/fleetflow && echo disk-errors > /etc/fleetflow/unhealthy"
    assert lab.ssh(broken, mark).returncode == 0
    try:
        state = run_script("service_check.sh", inventory=inventory, batch_size=1, return_state=True)
        assert state.is_failed()
        error = state.result(raise_on_failure=False)
        assert isinstance(error, PlaybookFailed)
        hosts = error.result.hosts
        assert hosts[broken].status == HostStatus.FAILED
        assert hosts[broken].outputs["rc"] == 3
        assert "unhealthy: disk-errors" in hosts[broken].outputs["stderr"]
        assert "exited 3" in hosts[broken].failure.message  # type: ignore[union-attr]
        first, _, last = (h.name for h in lab.hosts())
        assert hosts[first].outputs["stdout"].startswith("healthy")
        # Ansible stops a serial play when a whole batch fails: the last batch never ran.
        assert hosts[last].status == HostStatus.SKIPPED and hosts[last].outputs == {}
        never_ran = "test -e /var/log/fleetflow/scripts/service_check.sh.log"
        assert lab.ssh(last, never_ran).returncode == 1
    finally:
        lab.ssh(broken, "rm -f /etc/fleetflow/unhealthy")
    outputs = run_script("service_check.sh", inventory=inventory, hosts="web:db")
    assert sorted(outputs) == sorted(h.name for h in lab.hosts() if h.group in ("web", "db"))
    assert all(o["rc"] == "0" and o["status"] == "ok" for o in outputs.values())
    log = lab.ssh(lab.hosts()[0].name, "cat /var/log/fleetflow/scripts/service_check.sh.log")
    assert "rc=0" in log.stdout


def test_run_script_refuses_unknown_script() -> None:
    with pytest.raises(ParameterTypeError, match=r"unknown script 'rm-rf\.sh'"):
        run_script("rm-rf.sh", inventory="lab")


def test_flows_take_inventories_and_playbooks_by_name_only(lab: Lab) -> None:
    """Paths are refused when the flow is called, before any host is touched."""
    with pytest.raises(ParameterTypeError, match="unknown inventory"):
        run_script("service_check.sh", inventory=str(lab.inventory_dir))
    with pytest.raises(ParameterTypeError, match="unknown inventory"):
        rolling_update("2.0.0", hosts="all", inventory=str(lab.inventory_dir))
    with pytest.raises(ValidationError, match="unknown playbook"):
        Step(playbook=str(FIXTURE_PLAYBOOKS / "write_file.yml"))
    with pytest.raises(ValidationError, match="unknown playbook 'no_such_playbook'"):
        Step(playbook="no_such_playbook")


def test_rolling_update_deploys_batch_by_batch_and_stops_on_a_failed_batch(lab: Lab) -> None:
    inventory = "lab"
    hosts = [h.name for h in lab.hosts()]
    report = rolling_update("2.0.0", hosts="all", inventory=inventory, batch_size=1)
    assert [b["health"] for b in report["batches"]] == ["completed"] * 3
    for host in hosts:
        assert lab.ssh(host, CURRENT).stdout.strip().endswith("/releases/2.0.0")

    second = hosts[1]
    flag = "mkdir -p /etc/payments-api && touch /etc/payments-api/maintenance"
    assert lab.ssh(second, flag).returncode == 0
    try:
        state = rolling_update("2.1.0", hosts="all", inventory=inventory, batch_size=1,
                               return_state=True)  # fmt: skip
        assert state.is_failed()
        assert "stopped at batch 2" in str(state.result(raise_on_failure=False))
    finally:
        lab.ssh(second, "rm -f /etc/payments-api/maintenance")
    versions = [lab.ssh(h, CURRENT).stdout.strip().rsplit("/", 1)[-1] for h in hosts]
    # Batch 1 updated, batch 2 deployed but unhealthy, batch 3 never touched.
    assert versions == ["2.1.0", "2.1.0", "2.0.0"]


def test_rolling_update_changes_nothing_when_preflight_fails(lab: Lab) -> None:
    inventory = "lab"
    hosts = [h.name for h in lab.hosts()]
    before = [lab.ssh(h, CURRENT).stdout for h in hosts]
    flag = "mkdir -p /etc/fleetflow && touch /etc/fleetflow/unhealthy"
    assert lab.ssh(hosts[2], flag).returncode == 0
    try:
        state = rolling_update("9.9.9", hosts="all", inventory=inventory, return_state=True)
        assert state.is_failed()
        assert "in maintenance" in str(state.result(raise_on_failure=False))
    finally:
        lab.ssh(hosts[2], "rm -f /etc/fleetflow/unhealthy")
    assert [lab.ssh(h, CURRENT).stdout for h in hosts] == before


def test_runbook_checks_every_step_before_running_any(lab: Lab) -> None:
    host = lab.hosts()[0].name
    lab.ssh(host, "rm -f /var/tmp/ff-runbook-first")
    steps = [
        Step(
            playbook="write_file",
            limit=host,
            extra_vars={"path": "/var/tmp/ff-runbook-first", "content": "ran"},
        ),
        # An unknown playbook is refused earlier, as a parameter (above): a limit that
        # matches no host is what only the hosts' inventory can tell.
        Step(playbook="ping", name="Deploy", limit="no-such-host"),
    ]
    with pytest.raises(ConfigurationError, match=r"step 2 \(Deploy\): .*matches no host"):
        runbook(steps, inventory="lab")
    assert lab.ssh(host, "test -e /var/tmp/ff-runbook-first").returncode == 1


def test_runbook_checks_every_steps_variables_before_running_any(lab: Lab) -> None:
    """A later step's undeclared variable is refused before the first step runs."""
    host = lab.hosts()[0].name
    lab.ssh(host, "rm -f /var/tmp/ff-runbook-vars")
    steps = [
        Step(playbook="write_file", limit=host,
             extra_vars={"path": "/var/tmp/ff-runbook-vars", "content": "ran"}),
        Step(playbook="ping", name="Ping", limit=host, extra_vars={"colour": "red"}),
    ]  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"step 2 \(Ping\): .*'colour' is not a variable"):
        runbook(steps, inventory="lab")
    assert lab.ssh(host, "test -e /var/tmp/ff-runbook-vars").returncode == 1
