"""Fuzzing the parsers that take user input: only fleetflow's own errors come out."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prefect import Flow

from fleetflow._prefect import parameter_schema, validate
from fleetflow.engine.inventory import resolve_inventory, resolve_playbook
from fleetflow.engine.variables import check_variables
from fleetflow.exceptions import ConfigurationError, StackError
from fleetflow.stack import parse_worker_option
from fleetflow.stack._database import database_url

REPO = Path(__file__).resolve().parents[3]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
anything = json_values | st.binary() | st.sets(st.integers()) | st.builds(object)


@FAST
@given(st.dictionaries(st.text() | st.integers(), anything, max_size=5) | anything)
def test_extra_vars_are_accepted_or_refused_cleanly(value: Any) -> None:
    try:
        result = check_variables(REPO / "playbooks/run_script.yml", value)
    except ConfigurationError:
        return
    assert set(result) <= {"script_name", "script_args", "script_batch_size"}


@FAST
@given(st.text())
@example("x" * 300)  # found by this test: the OS refused the name ("File name too long")
@example("bad\x00name")
def test_inventory_and_playbook_names_never_escape_as_tracebacks(text: str) -> None:
    for resolve in (resolve_inventory, resolve_playbook):
        try:
            resolve(text, REPO)
        except ConfigurationError:
            continue


@FAST
@given(st.text())
def test_worker_options_and_database_urls_fail_cleanly(text: str) -> None:
    for parse in (parse_worker_option, database_url):
        try:
            parse(text)
        except StackError:
            continue


def _flows() -> list[Flow[Any, Any]]:
    """Every flow of flows/, found there: a new flow is fuzzed without editing this test."""
    found = []
    for path in sorted((REPO / "flows").glob("[a-z]*.py")):
        module = importlib.import_module(f"flows.{path.stem}")
        here = [
            v
            for v in vars(module).values()
            if isinstance(v, Flow) and v.fn.__module__ == module.__name__
        ]
        assert here, f"{path.name} defines no flow"
        found += here
    return found


SCHEMAS = [parameter_schema(f).model_dump_for_openapi() for f in _flows()]
PARAMETERS = sorted({name for schema in SCHEMAS for name in schema["properties"]})


# Code under Prefect's validator touches the global `random` while hypothesis draws; it flags that.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@FAST
@given(st.dictionaries(st.sampled_from(PARAMETERS), json_values, max_size=6))
def test_trigger_time_parameter_validation_reports_instead_of_raising(
    params: dict[str, Any],
) -> None:
    for schema in SCHEMAS:
        errors = validate(params, schema, raise_on_error=False, ignore_required=True)
        assert all(error.message for error in errors)
