"""Ansible's --diff output as text for a plan, with secrets censored.

Ansible hands a changed task's diff as a dict (or a list of them): before/after texts
with headers, a pre-rendered `prepared` text (packages, git), or notes that the diff was
skipped (binary, too large). Rendering follows Ansible's own callback, without colours.
Censoring is a second line of defence behind no_log and the run's masked secrets: values
of settings whose names say they are secret, and private key blocks, never reach a plan.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from fleetflow.engine.secrets import MASK

__all__ = ["censor", "render_diff"]

_SKIPPED = {
    "dst_binary": "diff skipped: destination file appears to be binary",
    "src_binary": "diff skipped: source file appears to be binary",
    "dst_larger": "diff skipped: destination file is larger than {} bytes",
    "src_larger": "diff skipped: source file is larger than {} bytes",
}
# `password: x`, `DB_PASSWORD=x`, `"api_key": "x"`, `token = x` ... the value goes.
_SECRET_SETTING = re.compile(
    r"""(?ix)
    (?P<key>[\w.-]*(?:passw(?:or)?d|passphrase|secret|token|api[_-]?key|private[_-]?key|
        credentials?|auth)[\w.-]*["']?\s*(?:[:=]|\s=>)\s*)
    (?P<value>["']?[^\s"',]+["']?)
    """
)
_PEM_BLOCK = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
)
# Lines of a key block that the diff prefixes (+, -, space) still look like base64.
_PEM_LINE = re.compile(r"^([+\- ]?)[A-Za-z0-9+/=]{40,}$", re.M)


def censor(text: str) -> str:
    """`text` with secret-looking settings' values and private key blocks masked."""
    text = _PEM_BLOCK.sub(f"-----{MASK} private key-----", text)
    text = _PEM_LINE.sub(rf"\1{MASK}", text)
    return _SECRET_SETTING.sub(lambda m: m["key"] + MASK, text)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, indent=4) + "\n"
    return str(value)


def _unified(diff: Mapping[str, Any]) -> str:
    before, after = _text(diff["before"]), _text(diff["after"])
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"before: {diff['before_header']}" if "before_header" in diff else "before",
        tofile=f"after: {diff['after_header']}" if "after_header" in diff else "after",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def render_diff(diff: Any) -> str:
    """One task result's `diff` as text (empty when there is nothing to show)."""
    parts: list[str] = []
    for one in diff if isinstance(diff, list) else [diff]:
        if not isinstance(one, Mapping):
            continue
        parts += [note.format(one[key]) for key, note in _SKIPPED.items() if key in one]
        if "before" in one and "after" in one:
            parts.append(_unified(one))
        if one.get("prepared"):
            parts.append(str(one["prepared"]))
    return censor("\n".join(p.rstrip("\n") for p in parts if p))
