"""`fleetflow run` against a fake Prefect API (httpx.MockTransport): parameters, refusals,
the watch's lines, table and exit codes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from fleetflow.exceptions import ConfigurationError
from fleetflow.ops import cli
from fleetflow.ops._api import ApiConfig, ApiUnavailable
from fleetflow.ops.run import Output, log_lines, parse_parameters, run_deployment, table_lines

CONFIG = ApiConfig(url="http://prefect.test/api", auth="admin:s3cret")
DEPLOYMENT_ID = str(uuid.uuid4())
RUN_ID = str(uuid.uuid4())


def log(message: str, level: int = 20, second: int = 0) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "message": message,
        "level": level,
        "name": "prefect.task_runs",
        "timestamp": f"2026-12-01T03:00:{second:02d}+00:00",
    }


@dataclass
class FakeApi:
    """Answers like Prefect's server: one deployment `playbook/lab` with a schema check."""

    states: Iterator[tuple[str, str, str]] = field(default_factory=lambda: iter(()))
    logs: list[list[dict[str, Any]]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    refuse: str | None = None
    failures: int = 0
    created: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    log_filters: list[dict[str, Any]] = field(default_factory=list)
    _state: tuple[str, str, str] = ("SCHEDULED", "Scheduled", "")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if self.failures:
            self.failures -= 1
            return httpx.Response(503, json={"detail": "busy"})
        if path == "/api/deployments/name/playbook/lab":
            return httpx.Response(200, json={"id": DEPLOYMENT_ID, "name": "lab"})
        if path.startswith("/api/deployments/name/"):
            return httpx.Response(404, json={"detail": "Deployment not found"})
        if path == f"/api/deployments/{DEPLOYMENT_ID}/create_flow_run":
            if self.refuse:
                return httpx.Response(409, json={"detail": self.refuse})
            self.created.append(json.loads(request.content))
            return httpx.Response(201, json={"id": RUN_ID, "name": "brave-otter"})
        if path == f"/api/flow_runs/{RUN_ID}":
            self._state = next(self.states, self._state)
            kind, name, message = self._state
            return httpx.Response(
                200, json={"id": RUN_ID, "state": {"type": kind, "name": name, "message": message}}
            )
        if path == "/api/logs/filter":
            self.log_filters.append(json.loads(request.content))
            return httpx.Response(200, json=self.logs.pop(0) if self.logs else [])
        if path == "/api/artifacts/filter":
            sort = json.loads(request.content).get("sort")
            if sort not in (None, "CREATED_DESC", "UPDATED_DESC", "ID_DESC", "KEY_DESC", "KEY_ASC"):
                return httpx.Response(422, json={"detail": f"sort {sort}"})
            return httpx.Response(200, json=self.artifacts)
        return httpx.Response(500, json={"detail": f"unexpected {path}"})


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fleetflow.ops.run.time.sleep", lambda _: None)
    monkeypatch.setattr("fleetflow.ops._api.time.sleep", lambda _: None)


class Lines:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.output = Output(out=self.out.append, err=self.err.append)

    @property
    def text(self) -> str:
        return "\n".join(self.out)


def run(api: FakeApi, params: dict[str, Any], *, follow: bool, lines: Lines) -> int:
    return run_deployment(
        "playbook/lab",
        params,
        follow=follow,
        output=lines.output,
        config=CONFIG,
        transport=httpx.MockTransport(api),
        poll=0,
    )


def test_param_values_are_json_when_they_parse_else_strings() -> None:
    got = parse_parameters(
        ["retries=2", "check=true", "limit=web-01", 'extra_vars={"a": [1]}', "x=a=b", "e="],
        '{"playbook": "ping"}',
    )
    assert got == {
        "playbook": "ping", "retries": 2, "check": True, "limit": "web-01",
        "extra_vars": {"a": [1]}, "x": "a=b", "e": "",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("pairs", "params", "reason"),
    [
        (["playbook"], None, "--param 'playbook': expected NAME=VALUE"),
        (["=ping"], None, "--param '=ping': expected NAME=VALUE"),
        ([], "{not json", "--params is not valid JSON"),
        ([], "[1, 2]", "--params must be a JSON object"),
        (["limit=a"], '{"limit": "b"}', "given in both --param and --params: limit"),
    ],
)
def test_malformed_parameters_are_refused(
    pairs: list[str], params: str | None, reason: str
) -> None:
    with pytest.raises(ConfigurationError, match="^" + reason.replace("[", r"\[")):
        parse_parameters(pairs, params)


def test_create_prints_id_and_ui_url_and_sends_values_as_json_with_basic_auth() -> None:
    api, lines = FakeApi(), Lines()
    jinja = "{{ lookup('pipe','id') }}"
    assert (
        run(api, {"playbook": "ping", "extra_vars": {"msg": jinja}}, follow=False, lines=lines) == 0
    )
    assert api.created == [{"parameters": {"playbook": "ping", "extra_vars": {"msg": jinja}}}]
    assert lines.out == [
        f"flow run brave-otter ({RUN_ID}) created",
        f"  http://prefect.test/runs/flow-run/{RUN_ID}",
    ]
    token = base64.b64encode(b"admin:s3cret").decode()
    assert {r.headers["authorization"] for r in api.requests} == {f"Basic {token}"}
    assert "s3cret" not in repr(CONFIG)


def test_ui_url_from_prefect_ui_url() -> None:
    config = ApiConfig.from_env(
        {"PREFECT_API_URL": "https://p.example/api/", "PREFECT_UI_URL": "https://ui.example/"}
    )
    assert config.url == "https://p.example/api"
    assert config.run_url("r1") == "https://ui.example/runs/flow-run/r1"
    assert not config.skip_verify


def test_missing_api_url_says_how_to_set_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert cli.main(["run", "playbook/lab"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        "fleetflow: error: PREFECT_API_URL is not set: export PREFECT_API_URL="
    )


def test_cli_malformed_param_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens
    assert cli.main(["run", "playbook/lab", "--param", "playbook"]) == 2
    assert capsys.readouterr().err == (
        "fleetflow: error: --param 'playbook': expected NAME=VALUE\n"
    )


def test_server_refusal_is_one_line_and_no_run_is_created() -> None:
    reason = (
        "Error creating flow run: Validation failed for field 'playbook'.\n"
        "Failure reason: '../../../tmp/x' is not one of ['ping', 'site']"
    )
    api = FakeApi(refuse=reason)
    with pytest.raises(ConfigurationError) as caught:
        run(api, {"playbook": "../../../tmp/x"}, follow=True, lines=Lines())
    assert str(caught.value) == "refused by the server: " + " ".join(reason.split())
    assert api.created == []


def test_unknown_deployment_and_bad_name_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^deployment 'playbook/nope' not found$"):
        run_deployment("playbook/nope", {}, follow=False, output=Lines().output, config=CONFIG,
                       transport=httpx.MockTransport(FakeApi()))  # fmt: skip
    with pytest.raises(ConfigurationError, match="expected FLOW/DEPLOYMENT"):
        run_deployment("playbook", {}, follow=False, output=Lines().output, config=CONFIG,
                       transport=httpx.MockTransport(FakeApi()))  # fmt: skip


def test_deployment_name_cannot_walk_the_api_path() -> None:
    api = FakeApi()
    with pytest.raises(ConfigurationError, match="not found"):
        run_deployment("playbook/..%2F..", {}, follow=False, output=Lines().output,
                       config=CONFIG, transport=httpx.MockTransport(api))  # fmt: skip
    assert api.requests[0].url.raw_path == b"/api/deployments/name/playbook/..%252F.."


def test_watch_failed_run_shows_host_lines_table_and_exits_1() -> None:
    api = FakeApi(
        states=iter([
            ("PENDING", "Pending", ""), ("RUNNING", "Running", ""), ("RUNNING", "Running", ""),
            ("FAILED", "Failed", "mixed on lab: failed (1 failed, 2 ok)\ndb-01: db hosts refuse"),
        ]),
        logs=[
            [log("Beginning flow run 'brave-otter' for flow 'playbook'")],
            [log("TASK [Ping]\nweb-01 | ok | Ping", second=2),
             log("db-01 | failed | Fail on db: db hosts refuse this change", 40, second=3)],
            [log("Encountered exception during execution:\nTraceback (most recent call last):",
                 40, second=4),
             log("Finished in state Failed('mixed ...')", 40, second=5)],
            [],
        ],
        artifacts=[
            {"key": "progress", "data": 100},
            {"key": "hosts-mixed-lab", "data": json.dumps([
                {"host": "db-01", "status": "failed", "failure": "Fail on db: db hosts\nrefuse"},
                {"host": "web-01", "status": "ok", "failure": ""},
            ])},
            {"key": "hosts-mixed-lab", "data": json.dumps([
                {"host": "db-01", "status": "running", "failure": ""},
            ])},  # an older version (the server answers newest first)
        ],
    )  # fmt: skip
    lines = Lines()
    assert run(api, {"playbook": "mixed"}, follow=True, lines=lines) == 1
    assert lines.out[2:] == [
        "state: Pending",
        "state: Running",
        "TASK [Ping]",
        "web-01 | ok | Ping",
        "db-01 | failed | Fail on db: db hosts refuse this change",
        "state: Failed",
        "\nhosts-mixed-lab:",
        "  host    status  failure",
        "  db-01   failed  Fail on db: db hosts refuse",
        "  web-01  ok",
        "\nfinal state: Failed: mixed on lab: failed (1 failed, 2 ok) db-01: db hosts refuse",
    ]
    assert "Traceback" not in lines.text


def test_log_cursor_asks_from_the_last_timestamp_and_drops_repeats() -> None:
    repeated = log("web-01 | ok | Ping", second=7)
    api = FakeApi(
        states=iter([("RUNNING", "Running", ""), ("COMPLETED", "Completed", "")]),
        logs=[[repeated], [repeated, log("web-01 | changed | Touch", second=8)], [], []],
    )
    lines = Lines()
    assert run(api, {}, follow=True, lines=lines) == 0
    assert lines.text.count("web-01 | ok | Ping") == 1
    assert "web-01 | changed | Touch" in lines.out
    assert "timestamp" not in api.log_filters[0]["logs"]
    assert api.log_filters[1]["logs"]["timestamp"]["after_"] == "2026-12-01T02:59:57+00:00"
    assert all(f["sort"] == "TIMESTAMP_ASC" for f in api.log_filters)
    assert lines.out[-1] == "\nfinal state: Completed"


@pytest.mark.parametrize(
    ("kind", "code"), [("COMPLETED", 0), ("FAILED", 1), ("CRASHED", 1), ("CANCELLED", 1)]
)
def test_exit_code_is_0_only_for_completed(kind: str, code: int) -> None:
    api = FakeApi(states=iter([(kind, kind.title(), "")]))
    assert run(api, {}, follow=True, lines=Lines()) == code


def test_transient_api_errors_are_survived() -> None:
    api = FakeApi(states=iter([("COMPLETED", "Completed", "")]), failures=3)
    assert run(api, {}, follow=True, lines=Lines()) == 0
    assert len(api.created) == 1


def test_api_that_stays_down_is_an_error_not_a_hang() -> None:
    api = FakeApi(failures=100)
    with pytest.raises(ApiUnavailable, match="HTTP 503"):
        run(api, {}, follow=False, lines=Lines())
    assert api.created == []


def test_ctrl_c_says_the_run_goes_on_and_how_to_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("fleetflow.ops.run.time.sleep", interrupt)
    lines = Lines()
    assert (
        run(FakeApi(states=iter([("RUNNING", "Running", "")])), {}, follow=True, lines=lines) == 130
    )
    assert lines.err == [
        f"interrupted: flow run brave-otter goes on; to stop it: prefect flow-run cancel {RUN_ID}"
    ]


@pytest.mark.parametrize(
    ("message", "level", "shown"),
    [
        ("web-01 | unreachable | Ping: ssh: connect to host", 30,
         ["web-01 | unreachable | Ping: ssh: connect to host"]),
        ("web-01 | failed (ignored) | Try: rc=1", 20, ["web-01 | failed (ignored) | Try: rc=1"]),
        ("[DEPRECATION WARNING]: INJECT_FACTS_AS_VARS\n[WARNING]: another", 30,
         ["WARNING: [DEPRECATION WARNING]: INJECT_FACTS_AS_VARS", "WARNING: [WARNING]: another"]),
        ("Created task run 'run_playbook-0'", 20, []),
        ("Finished in state Completed()", 20, []),
        ("Finished in state Failed('x')\nweb-01 | failed | T: m", 40, []),
        ("some chatter\nmore chatter", 20, []),
        ("PlaybookFailed: mixed\nTraceback (most recent call last):\n  File \"x\"\nValueError", 40,
         ["ERROR: PlaybookFailed: mixed"]),
        # The run log ships a batch of one level's lines as one record.
        ("web-01 | ok | Ping\nTASK [Touch]\nweb-02 | changed | Touch\nPLAY RECAP (1 attempt)\n"
         "web-01     : ok=5 changed=2 failed=0", 20,
         ["web-01 | ok | Ping", "TASK [Touch]", "web-02 | changed | Touch",
          "PLAY RECAP (1 attempt)", "web-01     : ok=5 changed=2 failed=0"]),
    ],
)  # fmt: skip
def test_log_lines_shown(message: str, level: int, shown: list[str]) -> None:
    assert log_lines({"message": message, "level": level}) == shown


def test_table_from_prefect_columns_shape() -> None:
    assert table_lines([{"host": "a", "status": "✗ failed", "failure": "T: x"}]) == [
        "host  status    failure",
        "a     ✗ failed  T: x",
    ]


def test_api_lost_while_watching_says_the_run_goes_on_and_exits_1() -> None:
    api = FakeApi(states=iter([("RUNNING", "Running", "")]))

    def then_down(request: httpx.Request) -> httpx.Response:
        if api.created:
            api.failures = 100
        return api(request)

    lines = Lines()
    code = run_deployment("playbook/lab", {}, follow=True, output=lines.output, config=CONFIG,
                          transport=httpx.MockTransport(then_down), poll=0)  # fmt: skip
    assert code == 1
    assert len(lines.err) == 1
    assert lines.err[0].startswith("lost the API while watching (reading the flow run: HTTP 503")
    assert lines.err[0].endswith(f"to stop it: prefect flow-run cancel {RUN_ID}")


def test_the_command_path_imports_no_prefect() -> None:
    """`fleetflow run` must start fast: Prefect's import alone takes a second or more."""
    code = (
        "import sys; import fleetflow.ops.cli, fleetflow.ops.run; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'ansible')))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
