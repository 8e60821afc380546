"""The docs site's generated reference: everything it lists is documented in the code, and
the pages list all of it (an option, flow parameter, setting or metric added without a
description fails here, and so does one the pages leave out)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import markdown
import pytest
import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetflow.ops.cli import _parser
from fleetflow.ops.reference import (
    benchmarks_page,
    cli_page,
    flows_page,
    generated_pages,
    metrics_page,
    settings_page,
)
from fleetflow.ops.reference._cli import commands
from fleetflow.ops.reference._flows import FlowReference, deployed_flows
from fleetflow.ops.reference._markdown import code, table, text
from fleetflow.ops.reference._models import metric_families, settings_models, settings_of
from fleetflow.ops.reference._schema import fields

REPO = Path(__file__).resolve().parents[3]


def _section(page: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = page.index(f"\n{heading}\n")
    following = re.compile(rf"\n#{{1,{len(level)}}} ")
    end = following.search(page, start + len(heading) + 2)
    return page[start : end.start() if end else len(page)]


@pytest.fixture(scope="module")
def flows() -> list[FlowReference]:
    return deployed_flows(REPO)


# The command line


def test_every_command_and_argument_of_fleetflow_has_help() -> None:
    found = commands(_parser())
    assert len(found) > 20  # the walk reached the nested subcommands
    assert [c.name for c in found[1:] if not c.help.strip()] == []
    missing = [f"{c.name} {a.invocation}" for c in found for a in c.arguments if not a.help]
    assert missing == []


def test_the_cli_page_shows_every_command_with_each_argument_and_its_help() -> None:
    page = cli_page()
    for command in commands(_parser()):
        section = _section(page, "#" * max(2, len(command.path)) + " " + command.name)
        assert text(command.help) in section
        for argument in command.arguments:
            assert f"| {code(argument.invocation)} | {text(argument.help)} |" in section


def test_the_walk_reaches_nested_commands_and_finds_what_has_no_help() -> None:
    parser = argparse.ArgumentParser(prog="tool")
    outer = parser.add_subparsers().add_parser("outer", help="the outer command")
    inner = outer.add_subparsers().add_parser("inner")
    inner.add_argument("--quiet", action="store_true")
    inner.add_argument("--port", type=int, default=80, help="the port")
    found = {c.name: c for c in commands(parser)}
    assert list(found) == ["tool", "tool outer", "tool outer inner"]
    assert found["tool outer"].help == "the outer command"
    assert found["tool outer inner"].help == ""
    quiet, port = found["tool outer inner"].arguments
    assert (quiet.invocation, quiet.help) == ("--quiet", "")
    assert (port.invocation, port.help, port.default) == ("--port PORT", "the port", "80")
    assert "[inner](#tool-outer-inner)" in cli_page(parser)


# Flows


def test_every_deployment_of_prefect_yaml_is_listed_under_its_flow(
    flows: list[FlowReference],
) -> None:
    specs = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    listed = {(f.entrypoint, d.name.split("/", 1)[1]) for f in flows for d in f.deployments}
    assert listed == {(s["entrypoint"], s["name"]) for s in specs}


def test_every_parameter_of_every_deployed_flow_has_a_description(
    flows: list[FlowReference],
) -> None:
    """What the UI shows beside each parameter: the flow docstring's Args section (Prefect
    drops the description of an Annotated type at the top level)."""
    missing = [
        f"{flow.name}.{name}"
        for flow in flows
        for name, prop in flow.schema["properties"].items()
        if not prop.get("description")
    ]
    assert missing == []


def test_every_field_of_the_models_flows_take_has_a_description(
    flows: list[FlowReference],
) -> None:
    missing = [
        f"{flow.name}: {model}.{field.name}"
        for flow in flows
        for model, schema in flow.models().items()
        for field in fields(schema)
        if not field.description and not field.type.startswith("always ")
    ]
    assert missing == []


def test_the_flows_page_lists_each_parameter_and_deployment(flows: list[FlowReference]) -> None:
    page = flows_page(REPO)
    for flow in flows:
        section = _section(page, f"## {flow.name}")
        for field in flow.parameters:
            assert f"| {code(field.name)} | {text(field.type)} |" in section
            assert text(field.description) in section
        for model in flow.models():
            assert f"\n#### {model}\n" in section
        for deployment in flow.deployments:
            assert f"| {code(deployment.name)} | {text(deployment.description)} |" in section


def test_a_flow_without_parameter_docs_shows_as_undocumented(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "hello.py").write_text(
        "from prefect import flow\n\n\n"
        "@flow(name='hello')\n"
        "def hello(who: str, times: int = 1) -> None:\n"
        '    """Greet.\n\n    Args:\n        who: Whom to greet.\n    """\n'
    )
    (tmp_path / "prefect.yaml").write_text(
        "deployments:\n"
        "  - name: daily\n"
        "    entrypoint: flows/hello.py:hello\n"
        "    description: Greet the world.\n"
        "    parameters: {who: world}\n"
        "    schedules: [{cron: '0 9 * * *', timezone: UTC}]\n"
        "    work_pool: {name: pool, work_queue_name: q}\n"
    )
    (flow,) = deployed_flows(tmp_path)
    described = {f.name: f.description for f in flow.parameters}
    assert described == {"who": "Whom to greet.", "times": ""}
    assert flow.summary == "Greet."
    (deployment,) = flow.deployments
    assert deployment.name == "hello/daily"
    assert deployment.started_by == ("cron `0 9 * * *` (UTC)",)
    assert deployment.work_pool == "pool, queue q"
    assert '`who="world"`' in flows_page(tmp_path)


# Settings and metrics


def test_every_setting_has_a_description_and_the_page_lists_it() -> None:
    page = settings_page()
    for model in settings_models():
        for setting in settings_of(model):
            assert setting.description, setting.variable
            assert f"| {code(setting.variable)} | {text(setting.type)} |" in page
    assert "| `FLEETFLOW_API_PORT` | integer (1 to 65535) | `4200` |" in page
    assert "| `FLEETFLOW_ALERT_SLACK_URL` | secret (never shown), optional | unset |" in page


def test_a_setting_without_description_shows_as_undocumented() -> None:
    class Sample(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="SAMPLE_")

        known: int = Field(default=3, ge=1, description="Documented.")
        bare: str | None = None

    known, bare = settings_of(Sample)
    assert (known.variable, known.type, known.default) == ("SAMPLE_KNOWN", "integer (at least 1)",
                                                           "`3`")  # fmt: skip
    assert (bare.variable, bare.type, bare.default, bare.description) == (
        "SAMPLE_BARE", "text, optional", "unset", ""
    )  # fmt: skip


def test_every_metric_has_help_and_the_page_lists_each_served_name() -> None:
    from fleetflow.metrics import new_families, served_names

    page = metrics_page()
    found = metric_families()
    assert [m.name for m in found if not m.help.strip()] == []
    served = {s for m in found for s in m.samples}
    assert served == served_names(new_families())
    for name in served:
        assert code(name) in page
    host = next(m for m in found if m.name == "fleetflow_host_outcomes")
    assert (host.kind, host.labels) == ("counter", ("playbook", "group", "outcome"))


# Benchmarks and the pages together


def test_the_benchmarks_page_is_bench_results_as_they_are() -> None:
    results = (REPO / "bench" / "RESULTS.md").read_text()
    assert benchmarks_page(REPO).startswith(results)


def _nav_pages(entries: list[object]) -> list[str]:
    found: list[str] = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            found += _nav_pages(value) if isinstance(value, list) else [str(value)]
    return found


def test_the_generated_pages_are_in_the_nav_and_not_files_in_docs() -> None:
    generated = set(generated_pages(REPO))
    assert generated == {
        "reference/cli.md", "reference/flows.md", "reference/settings.md",
        "reference/metrics.md", "benchmarks.md",
    }  # fmt: skip
    assert generated <= set(_nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]))
    assert [page for page in generated if (REPO / "docs" / page).exists()] == []


# Markdown


def test_cells_keep_pipes_tags_and_code_spans_as_written() -> None:
    cell = text("a|b <name> *x* `c|d` [l]")
    html = markdown.markdown(table(("one", "two"), [(cell, code("``x``"))]), extensions=["tables"])
    assert html.count("<td>") == 2
    assert "a|b &lt;name&gt; *x* <code>c|d</code> [l]" in html
    assert "<code>``x``</code>" in html
