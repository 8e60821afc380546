"""Markdown for the generated pages: prose from docstrings and help strings made safe in
table cells, code spans and tables."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Outside code spans: characters Markdown would read as markup (a table's column bar, an
# HTML tag such as the <name> of "playbooks/<name>.yml", emphasis, links).
_MARKUP = re.compile(r"([\\|*_\[\]])")


def text(value: str) -> str:
    """`value` as Markdown that reads as written: one line, `code spans` kept, the rest
    escaped."""
    parts = " ".join(value.split()).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: nothing is code
        parts = [" ".join(value.split())]
    return "`".join(
        part if odd else _MARKUP.sub(r"\\\1", part).replace("<", "&lt;")
        for odd, part in ((i % 2 == 1, p) for i, p in enumerate(parts))
    )


def code(value: str) -> str:
    """`value` as one code span, whatever backticks it holds."""
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of cells that are Markdown already (see `text` and `code`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def prose(docstring: str) -> str:
    """A docstring's paragraphs as Markdown that reads as written (RST's ``literal`` as a
    code span)."""
    blocks = re.split(r"\n\s*\n", docstring.replace("``", "`").strip())
    return "\n\n".join(text(block) for block in blocks if block.strip())
