"""The variables a caller may set for a playbook, and how they reach Ansible: as data.

A playbook declares what a caller may set in ``playbooks/params/<playbook>.yml``, a file
beside it (the same place relative to a playbook given by path)::

    variables:
      app_version:
        type: str                 # str | int | float | bool | list
        description: Version to deploy.
        required: true
        pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]*$'
        max_length: 64            # str (default 1000); list: max_items (default 100)
        # choices: [a, b]   min: 1   max: 10   elements: str (for lists)

Anything else a caller sends is refused before any host is touched: undeclared names,
Ansible's connection and magic variables (`ansible_*`, `hostvars`, `environment`, ...;
refused even in a declaration), values of the wrong type or shape, and control
characters. A playbook without the file accepts no variables from callers.

What passes is written for Ansible with every string, mapping keys included, tagged
``!unsafe``: Ansible never renders `{{ ... }}` or `{% ... %}` in it, at any depth (what
AWX does to launch-time extra vars).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model

from fleetflow.exceptions import ConfigurationError

__all__ = [
    "RESERVED_NAMES",
    "Declaration",
    "check_variables",
    "declaration_path",
    "is_reserved",
    "load_declaration",
    "unsafe_yaml",
]

# Ansible's magic variables and the play keywords a variable could shadow.
RESERVED_NAMES = frozenset(
    {
        "environment", "group_names", "groups", "hostvars", "inventory_dir",
        "inventory_file", "inventory_hostname", "inventory_hostname_short", "lookup",
        "omit", "play_hosts", "playbook_dir", "q", "query", "role_name", "role_names",
        "role_path", "vars", "hosts", "become", "become_user", "become_method",
        "connection", "remote_user", "delegate_to", "gather_facts", "module_defaults",
    }
)  # fmt: skip
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# C0 controls (tab and newline allowed: a comment may span lines) and DEL.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_DEFAULT_MAX_LENGTH = 1000
_DEFAULT_MAX_ITEMS = 100
_SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def is_reserved(name: str) -> bool:
    """Connection, privilege and magic variables: never a caller's to set."""
    return name.startswith(("ansible_", "_")) or name in RESERVED_NAMES


class VariableSpec(BaseModel):
    """One variable a caller may set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["str", "int", "float", "bool", "list"] = "str"
    description: str = ""
    required: bool = False
    choices: tuple[str | int | float, ...] | None = None
    pattern: str | None = None
    max_length: int = Field(default=_DEFAULT_MAX_LENGTH, ge=1, le=100_000)
    min: float | None = None
    max: float | None = None
    elements: Literal["str", "int", "float", "bool"] = "str"
    max_items: int = Field(default=_DEFAULT_MAX_ITEMS, ge=0, le=10_000)

    def describe(self, name: str) -> str:
        shape = f"list of {self.elements}" if self.type == "list" else self.type
        if self.choices:
            shape += f" one of {', '.join(map(str, self.choices))}"
        elif self.pattern:
            shape += f" matching {self.pattern}"
        return f"{name} ({shape}{', required' if self.required else ''})"


class Declaration(BaseModel):
    """What a playbook lets callers set (playbooks/params/<playbook>.yml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variables: dict[str, VariableSpec] = Field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(s.describe(n) for n, s in sorted(self.variables.items())) or "nothing"

    def json_schema(self) -> dict[str, Any]:
        """The same rules as JSON schema, made from the model that checks them in Python,
        for the server to check at trigger time. A missing required variable is left to
        the preflight, which names what the playbook accepts."""
        schema = _model(self).model_json_schema()
        schema.pop("required", None)
        return schema


def declaration_path(playbook: Path) -> Path:
    return playbook.parent / "params" / f"{playbook.stem}.yml"


def load_declaration(playbook: Path) -> Declaration:
    """The playbook's declaration; an empty one when it has no file."""
    path = declaration_path(playbook)
    if not path.is_file():
        return Declaration()
    return _load(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=256)
def _load(path: Path, mtime: int) -> Declaration:
    del mtime  # part of the cache key: an edited file is read again
    try:
        data = yaml.safe_load(path.read_text()) or {}
        declaration = Declaration.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"{path} is not a valid variable declaration: {exc}") from exc
    for name, spec in declaration.variables.items():
        if not _NAME.match(name) or is_reserved(name):
            raise ConfigurationError(
                f"{path}: {name!r} cannot be declared: callers may not set Ansible's "
                "connection or magic variables; use a lower-case name of your own"
            )
        if spec.pattern is not None:
            try:
                re.compile(spec.pattern)
            except re.error as exc:
                raise ConfigurationError(f"{path}: {name}: bad pattern: {exc}") from exc
    return declaration


def _scalar(kind: str, spec: VariableSpec) -> Any:
    if kind == "str":
        return Annotated[str, StringConstraints(max_length=spec.max_length, pattern=spec.pattern)]
    if kind in ("int", "float"):
        return Annotated[_SCALARS[kind], Field(ge=spec.min, le=spec.max)]
    return bool


def _field_type(spec: VariableSpec) -> Any:
    if spec.choices:
        return Literal[spec.choices]
    if spec.type == "list":
        return Annotated[list[_scalar(spec.elements, spec)], Field(max_length=spec.max_items)]  # type: ignore[misc]
    return _scalar(spec.type, spec)


def _model(declaration: Declaration) -> type[BaseModel]:
    fields: dict[str, Any] = {
        name: (_field_type(spec), ... if spec.required else None)
        for name, spec in declaration.variables.items()
    }
    config = ConfigDict(extra="forbid", strict=True)
    return create_model("Variables", __config__=config, **fields)


def check_variables(playbook: Path, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's variables if the playbook declares them all, else ConfigurationError
    naming the variable and what the playbook accepts."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigurationError(
            f"extra_vars must be a mapping of variable names to values, got {type(values).__name__}"
        )
    declaration = load_declaration(playbook)
    accepts = f"{playbook.stem} accepts: {declaration.describe()}"
    for name in values:
        if not isinstance(name, str) or is_reserved(name):
            raise ConfigurationError(
                f"extra_vars: {str(name)[:80]!r} is a connection or magic variable of "
                f"Ansible; callers may not set it ({accepts})"
            )
        if name not in declaration.variables:
            raise ConfigurationError(
                f"extra_vars: {name[:80]!r} is not a variable {playbook.stem} declares "
                f"(in {declaration_path(playbook).name} under params/); {accepts}"
            )
    _refuse_control_characters(values)
    try:
        _model(declaration).model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigurationError(f"extra_vars: {_first_error(exc)}; {accepts}") from exc
    return dict(values)


def _refuse_control_characters(value: Any, where: str = "extra_vars") -> None:
    if isinstance(value, str) and CONTROL_CHARACTERS.search(value):
        raise ConfigurationError(f"{where}: control characters are not allowed")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_control_characters(key, where)
            _refuse_control_characters(item, f"{where}.{str(key)[:40]}")
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_control_characters(item, where)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}"


class _UnsafeDumper(yaml.SafeDumper):
    """Strings tagged !unsafe: Ansible keeps them as text and never templates them."""


_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"


def _unsafe_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Ansible resolves an !unsafe scalar's type again ("1.0" would arrive as a float).
    # A string that reads as a number, bool, null or date holds no template delimiter
    # ({{ {% {# or a #jinja2: header), so it goes as a quoted plain string instead.
    if _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) != _STR_TAG:  # type: ignore[no-untyped-call]
        return dumper.represent_str(value)
    return dumper.represent_scalar("!unsafe", value, style='"')


_UnsafeDumper.add_representer(str, _unsafe_str)


def unsafe_yaml(values: Mapping[str, Any]) -> str:
    """`values` as YAML for ansible-playbook's `-e @file`, every string `!unsafe`."""
    return yaml.dump(dict(values), Dumper=_UnsafeDumper, allow_unicode=True, width=1 << 20)
