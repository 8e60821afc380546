"""reference/settings.md and reference/metrics.md: the settings models' fields (each a
FLEETFLOW_* variable) and the metric families the exporter serves."""

from __future__ import annotations

import types
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from prometheus_client.metrics import MetricWrapperBase
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from fleetflow.ops.reference._markdown import code, prose, table, text

__all__ = [
    "Metric",
    "Setting",
    "metric_families",
    "metrics_page",
    "settings_models",
    "settings_of",
    "settings_page",
]

_TYPES: dict[Any, str] = {
    str: "text",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    SecretStr: "secret (never shown)",
}


@dataclass(frozen=True)
class Setting:
    """One field of a settings model: the variable that sets it, its type and default."""

    variable: str
    type: str
    default: str
    description: str


def settings_models() -> list[type[BaseSettings]]:
    """fleetflow's settings models, each read from its own FLEETFLOW_* variables."""
    from fleetflow.alerts import AlertSettings
    from fleetflow.settings import FleetflowSettings

    return [FleetflowSettings, AlertSettings]


def settings_of(model: type[BaseSettings]) -> list[Setting]:
    prefix = str(model.model_config.get("env_prefix", ""))
    return [
        Setting(
            variable=(prefix + name).upper(),
            type=_type_name(info.annotation) + _limits(info),
            default=_default(info),
            description=info.description or "",
        )
        for name, info in model.model_fields.items()
    ]


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(v) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        named = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(named) + ", optional"
    return _TYPES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _limits(info: FieldInfo) -> str:
    bounds = {
        attr: getattr(m, attr)
        for m in info.metadata
        for attr in ("ge", "gt", "le", "lt")
        if getattr(m, attr, None) is not None
    }
    low = f"at least {bounds['ge']}" if "ge" in bounds else None
    low = f"above {bounds['gt']}" if "gt" in bounds else low
    high = f"at most {bounds['le']}" if "le" in bounds else None
    high = f"below {bounds['lt']}" if "lt" in bounds else high
    if "ge" in bounds and "le" in bounds:
        return f" ({bounds['ge']} to {bounds['le']})"
    shown = ", ".join(b for b in (low, high) if b)
    return f" ({shown})" if shown else ""


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "computed (see description)"
    if info.default is PydanticUndefined:
        return "required"
    if info.default is None:
        return "unset"
    return code(str(info.default))


def settings_page() -> str:
    lines = [
        "# Settings",
        "",
        "Generated when the site is built from fleetflow's settings models: each setting is "
        "read from the environment variable named here when a command or a flow starts "
        "(an unset variable keeps the default; empty values count as set).",
        "",
    ]
    for model in settings_models():
        lines += [f"## {model.__name__}", "", prose(model.__doc__ or ""), ""]
        rows = [
            (code(s.variable), text(s.type), s.default, text(s.description))
            for s in settings_of(model)
        ]
        lines += [table(("Variable", "Type", "Default", "Description"), rows), ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Metric:
    """One metric family the exporter serves."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    samples: tuple[str, ...]


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def metric_families() -> list[Metric]:
    from fleetflow.metrics import new_families

    families = new_families()
    found = []
    for field in fields(families):
        family = getattr(families, field.name)
        if not isinstance(family, MetricWrapperBase):
            continue
        (described,) = family.describe()
        found.append(
            Metric(
                name=described.name,
                kind=described.type,
                help=described.documentation,
                labels=tuple(family._labelnames),
                samples=tuple(described.name + s for s in _SUFFIXES[described.type]),
            )
        )
    return found


def metrics_page() -> str:
    from fleetflow.metrics._families import DURATION_BUCKETS

    rows = [
        (
            "<br>".join(code(s) for s in m.samples),
            m.kind,
            ", ".join(code(label) for label in m.labels) or "none",
            text(m.help),
        )
        for m in metric_families()
    ]
    buckets = ", ".join(f"{b:g}" for b in DURATION_BUCKETS)
    return "\n".join(
        [
            "# Metrics",
            "",
            "Generated when the site is built from the metric families `fleetflow exporter` "
            "serves (at `/metrics`). Labels are bounded: flow, deployment, playbook, "
            "inventory, group, state, worker and pool names, never run ids, host names or "
            "messages.",
            "",
            table(("Served as", "Type", "Labels", "Help"), rows),
            "",
            f"Histograms' buckets, in seconds: {buckets}.",
            "",
        ]
    )
