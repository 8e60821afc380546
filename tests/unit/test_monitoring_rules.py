"""deployments/monitoring against the real tools (Debian's prometheus 2.42 and
prometheus-alertmanager 0.25): the configurations load, the rules load and behave as their
unit tests say, and dashboards and rules query only names that are served."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fleetflow.metrics import new_families, served_names

from ..conftest import REPO

MONITORING = REPO / "deployments" / "monitoring"
NODE_NAMES = REPO / "tests" / "fixtures" / "node-exporter-1.5-names.txt"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))


def tool(name: str) -> str:
    found = shutil.which(name)
    # No skip: CI installs them (tools/install-system-deps.sh); a missing tool is a failure.
    assert found, f"{name} is not installed: run tools/install-system-deps.sh"
    return found


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_accepts_the_prometheus_configuration_and_its_rule_files() -> None:
    out = run(tool("promtool"), "check", "config", str(MONITORING / "prometheus.yml"))
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in out


def test_promtool_accepts_the_rules() -> None:
    out = run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert out.count("SUCCESS") == len(RULE_FILES)


def test_the_rule_unit_tests_pass() -> None:
    """Critical failure pages, non-critical does not, a flapping worker pages once, ..."""
    run(tool("promtool"), "test", "rules", str(MONITORING / "tests" / "alerts_test.yml"))


def test_a_rule_unit_test_can_fail(tmp_path: Path) -> None:
    """The harness sees a wrong expectation (a non-critical failure paging)."""
    tests = yaml.safe_load((MONITORING / "tests" / "alerts_test.yml").read_text())
    tests["rule_files"] = [str(path) for path in RULE_FILES]
    first = tests["tests"][0]["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]
    first["deployment"] = "daily"  # the non-critical one
    (tmp_path / "t.yml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [tool("promtool"), "test", "rules", str(tmp_path / "t.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


def test_amtool_accepts_the_alertmanager_configuration() -> None:
    run(tool("amtool"), "check-config", str(MONITORING / "alertmanager.yml"))


def _node_names() -> set[str]:
    lines = NODE_NAMES.read_text().splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def _queried(exprs: list[str]) -> set[str]:
    """Metric names in PromQL expressions (label values and recorded level:names left out)."""
    names = set()
    for expr in exprs:
        bare = re.sub(r'"[^"]*"', '""', expr)  # label values: ext4, Failed...
        names |= set(re.findall(r"(?<![\w:])(?:fleetflow|node)_\w+", bare))
    return names


def test_dashboard_and_rules_query_only_served_names() -> None:
    """Exporter names from its families, node exporter names from a real 1.5 scrape."""
    dashboard = json.loads((REPO / "deployments/grafana/fleetflow.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for path in RULE_FILES:
        groups = yaml.safe_load(path.read_text())["groups"]
        exprs += [rule["expr"] for group in groups for rule in group["rules"]]
    served = served_names(new_families()) | _node_names()
    used = _queried(exprs)
    assert used - served == set()
    assert {"node_cpu_seconds_total", "node_filesystem_avail_bytes"} <= used


def test_the_name_check_sees_a_misspelt_name() -> None:
    expr = 'node_memory_MemAvailable_byte{fstype!~"node_x"} / fleetflow_flow_runs > job:node_y:z'
    used = _queried([expr])
    assert used == {"node_memory_MemAvailable_byte", "fleetflow_flow_runs"}
    assert used - (served_names(new_families()) | _node_names()) == used


def test_the_dashboard_shows_each_worker_machine_resource() -> None:
    dashboard = json.loads((REPO / "deployments/grafana/fleetflow.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in ("node_cpu_seconds_total", "node_memory_MemAvailable_bytes",
                 "node_filesystem_avail_bytes", 'up{job="node"}'):  # fmt: skip
        assert name in exprs


@pytest.mark.parametrize(
    "name", ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter"]
)
def test_the_system_deps_script_installs_the_monitoring_packages(name: str) -> None:
    script = (REPO / "tools" / "install-system-deps.sh").read_text()
    assert re.search(rf"^packages=\(.*\b{name}\b", script, re.M)
