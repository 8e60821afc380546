"""A JSON schema property (a flow parameter as Prefect publishes it, a field of a model it
takes) read back as a reader wants it: a type, a default and its limits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fleetflow.ops.reference._markdown import code, table, text

__all__ = ["Field", "fields", "fields_table", "referenced"]

_NAMES = {"string": "text", "integer": "integer", "number": "number", "boolean": "boolean"}


@dataclass(frozen=True)
class Field:
    """One property of an object schema."""

    name: str
    type: str
    default: str
    constraints: tuple[str, ...]
    description: str


def fields(schema: dict[str, Any]) -> list[Field]:
    """The properties of object `schema`, in order (Prefect's `position` for a flow)."""
    properties: dict[str, dict[str, Any]] = schema.get("properties", {})
    required = set(schema.get("required", []))
    ordered = sorted(properties.items(), key=lambda item: item[1].get("position", 0))
    return [
        Field(
            name=name,
            type=type_of(prop),
            default="required" if name in required else _default(prop),
            constraints=tuple(constraints(prop)),
            description=_description(prop),
        )
        for name, prop in ordered
    ]


def fields_table(found: list[Field]) -> str:
    rows = [
        (
            code(f.name),
            text(f.type),
            f.default if f.default == "required" else code(f.default),
            "<br>".join(f.constraints),
            text(f.description),
        )
        for f in found
    ]
    return table(("Name", "Type", "Default", "Limits", "Description"), rows)


def referenced(schema: dict[str, Any]) -> list[str]:
    """Names of the definitions `schema` refers to, in order of first reference."""
    found: dict[str, None] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                found[ref.rsplit("/", 1)[-1]] = None
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema.get("properties", {}))
    definitions = schema.get("definitions", {})
    done = 0
    while done < len(found):  # models inside models
        visit(definitions.get(list(found)[done], {}))
        done += 1
    return list(found)


def type_of(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "const" in prop:
        return f"always {json.dumps(prop['const'])}"
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " or ".join(dict.fromkeys(type_of(branch) for branch in prop[key]))
    kind = prop.get("type")
    if kind == "array":
        return f"list of {type_of(prop['items'])}" if "items" in prop else "list"
    if kind == "object":
        return "mapping"
    if kind == "null":
        return "null"
    if prop.get("format") in ("date", "date-time"):
        return str(prop["format"])
    return _NAMES.get(str(kind), "any")


def constraints(prop: dict[str, Any]) -> list[str]:
    """The limits a value must keep, as short phrases of Markdown."""
    found: list[str] = []
    for key in ("anyOf", "oneOf"):
        for branch in prop.get(key, []):
            if branch.get("type") != "null":
                found += constraints(branch)
    if "enum" in prop:
        found.append("one of " + ", ".join(code(json.dumps(v)) for v in prop["enum"]))
    found += _range(prop, "minimum", "exclusiveMinimum", "maximum", "")
    found += _range(prop, "minLength", "", "maxLength", " characters")
    found += _range(prop, "minItems", "", "maxItems", " items")
    found += _range(prop, "minProperties", "", "maxProperties", " entries")
    if "pattern" in prop:
        found.append("matches " + code(prop["pattern"]))
    if "patternProperties" in prop:
        found.append("names match " + ", ".join(code(p) for p in prop["patternProperties"]))
    items = prop.get("items")
    if isinstance(items, dict) and "$ref" not in items:
        found += [f"each: {phrase}" for phrase in constraints(items)]
    return found


def _range(prop: dict[str, Any], low: str, above: str, high: str, unit: str) -> list[str]:
    lowest, highest = prop.get(low), prop.get(high)
    if above and above in prop:
        lower = f"above {prop[above]}"
        return [f"{lower}, at most {highest}{unit}" if highest is not None else lower + unit]
    if lowest is not None and highest is not None:
        return [f"{lowest} to {highest}{unit}"]
    if lowest is not None:
        return [f"at least {lowest}{unit}"]
    if highest is not None:
        return [f"at most {highest}{unit}"]
    return []


def _default(prop: dict[str, Any]) -> str:
    return json.dumps(prop.get("default"))


def _description(prop: dict[str, Any]) -> str:
    """The property's own description; an optional value's type's when it has none."""
    if prop.get("description"):
        return str(prop["description"])
    branches = [b for b in prop.get("anyOf", []) if b.get("description")]
    return str(branches[0]["description"]) if branches else ""
