"""Caller variables: only what a playbook declares, and always as data (issue #18)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from fleetflow.engine.variables import (
    check_variables,
    is_reserved,
    load_declaration,
    unsafe_yaml,
)
from fleetflow.exceptions import ConfigurationError

REPO = Path(__file__).resolve().parents[3]


def _import_ansible() -> tuple[Any, Any]:
    """Ansible's loader wants exactly one FileFinder path hook; importing Prefect's server
    (another unit test, same process) adds a second one. Import with the first only."""
    hooks = list(sys.path_hooks)
    finders = [h for h in hooks if "FileFinder" in getattr(h, "__name__", "")]
    sys.path_hooks[:] = [h for h in hooks if h not in finders[1:]]
    try:
        from ansible.parsing.dataloader import DataLoader
        from ansible.template import is_trusted_as_template
    finally:
        sys.path_hooks[:] = hooks
    return DataLoader, is_trusted_as_template


DataLoader, is_trusted_as_template = _import_ansible()
_RESOLVER, _STR = Resolver(), "tag:yaml.org,2002:str"
RUN_SCRIPT = REPO / "playbooks" / "run_script.yml"


def _playbook(tmp_path: Path, declaration: str) -> Path:
    playbook = tmp_path / "job.yml"
    playbook.write_text("- hosts: all\n  tasks: []\n")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "job.yml").write_text(declaration)
    return playbook


def test_declared_variables_pass_with_their_values_untouched() -> None:
    values = {"script_name": "disk_usage.sh", "script_args": ["{{ x }}", "-v"]}
    assert check_variables(RUN_SCRIPT, values) == values


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"app_name": "x"}, "'app_name' is not a variable run_script declares"),
        ({"ansible_connection": "local"}, "connection or magic variable"),
        ({"ansible_ssh_common_args": "-o ProxyCommand=x"}, "connection or magic variable"),
        ({"hostvars": {}}, "connection or magic variable"),
        ({"environment": {"X": "1"}}, "connection or magic variable"),
        ({"_private": 1}, "connection or magic variable"),
        ({"script_name": "../bin/sh"}, "script_name: String should match pattern"),
        ({"script_name": 3}, "script_name: Input should be a valid string"),
        ({"script_name": "a", "script_args": "x"}, "script_args: Input should be a valid list"),
        ({"script_name": "a", "script_args": [{"x": 1}]}, "script_args.0"),
        ({"script_name": "a\x00b"}, "control characters"),
        ({"script_name": "a", "script_args": ["\x1b[2J"]}, "control characters"),
        ({"script_args": []}, "script_name: Field required"),
        ("script_name=x", "must be a mapping"),
    ],
)
def test_anything_else_is_refused_naming_the_variable_and_what_is_accepted(
    values: Any, needle: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        check_variables(RUN_SCRIPT, values)
    assert needle in str(refused.value)
    if isinstance(values, dict) and "control" not in needle:
        assert "run_script accepts: script_args" in str(refused.value)


def test_a_playbook_without_a_declaration_accepts_nothing() -> None:
    assert check_variables(REPO / "playbooks" / "ping.yml", {}) == {}
    with pytest.raises(ConfigurationError, match="ping accepts: nothing"):
        check_variables(REPO / "playbooks" / "ping.yml", {"x": 1})


def test_declarations_cannot_open_connection_variables(tmp_path: Path) -> None:
    playbook = _playbook(tmp_path, "variables:\n  ansible_host:\n    type: str\n")
    with pytest.raises(ConfigurationError, match="cannot be declared"):
        load_declaration(playbook)


def test_a_broken_declaration_names_its_file(tmp_path: Path) -> None:
    playbook = _playbook(tmp_path, "variables:\n  n:\n    type: integer\n")
    with pytest.raises(ConfigurationError, match=r"params/job.yml is not a valid"):
        check_variables(playbook, {"n": 1})


def test_types_choices_and_bounds(tmp_path: Path) -> None:
    playbook = _playbook(
        tmp_path,
        "variables:\n  n: {type: int, min: 1, max: 5}\n  mode: {choices: [a, b]}\n"
        "  flag: {type: bool}\n  names: {type: list, elements: str, max_items: 2}\n",
    )
    ok = {"n": 5, "mode": "b", "flag": True, "names": ["x", "y"]}
    assert check_variables(playbook, ok) == ok
    for bad in ({"n": 6}, {"n": "5"}, {"mode": "c"}, {"flag": "yes"}, {"names": ["a", "b", "c"]}):
        with pytest.raises(ConfigurationError):
            check_variables(playbook, bad)


def test_reserved_names() -> None:
    assert is_reserved("ansible_become_password") and is_reserved("groups")
    assert not is_reserved("app_version")


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
jinja = st.sampled_from(["{{ 7 * 7 }}", "{% raw %}x{% endraw %}", "{# c #}", "{{", "%}"])
jinja_text = jinja | st.builds(lambda a, b: a + b, st.text(max_size=5), jinja)
with_jinja = st.recursive(
    jinja_text,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(jinja_text | st.text(), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(values={"0": "1.0", "v": ["true", "{{ 7 * 7 }}", "#jinja2:x"]})
@given(st.dictionaries(st.text(min_size=1), json_like | with_jinja, max_size=4))
def test_every_string_at_every_depth_is_unsafe_for_ansible(
    tmp_path_factory: pytest.TempPathFactory, values: dict[str, Any]
) -> None:
    """Read back as ansible-playbook reads `-e @file` (trusted as templates, like any vars
    file), the values are equal and no string, key or value at any depth is a template."""
    path = tmp_path_factory.mktemp("vars") / "extra_vars.yml"
    path.write_text(unsafe_yaml(values))
    loaded = DataLoader().load_from_file(str(path), trusted_as_template=True)
    assert loaded == values
    trusted = [text for text in _strings(loaded) if is_trusted_as_template(text)]
    # Only strings that cannot hold a template (they read as numbers, bools, dates).
    assert all(_RESOLVER.resolve(ScalarNode, t, (True, False)) != _STR for t in trusted), trusted


def test_a_plain_vars_file_would_be_templated(tmp_path: Path) -> None:
    """The check above can fail: the same values written plainly are templates."""
    path = tmp_path / "plain.yml"
    path.write_text(yaml.safe_dump({"a": "{{ 7 * 7 }}"}))
    loaded = DataLoader().load_from_file(str(path), trusted_as_template=True)
    assert is_trusted_as_template(loaded["a"])


def _strings(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_unsafe_yaml_is_plain_yaml_for_other_readers() -> None:
    assert yaml.load(unsafe_yaml({"a": "{{ x }}"}), Loader=yaml.BaseLoader) == {"a": "{{ x }}"}
