"""reference/cli.md: every `fleetflow` command and option, walked from the argparse parser
the command itself runs (so the page shows what `--help` shows)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from fleetflow.ops.reference._markdown import code, prose, table, text

__all__ = ["Argument", "Command", "cli_page", "commands"]

_WIDTH = 80


@dataclass(frozen=True)
class Argument:
    """One option or positional argument of a command, as `--help` writes it."""

    invocation: str
    help: str
    default: str


@dataclass(frozen=True)
class Command:
    """The top-level command or one of its subcommands, however deep."""

    path: tuple[str, ...]
    help: str
    description: str
    raw_description: bool
    usage: str
    arguments: tuple[Argument, ...]
    subcommands: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return " ".join(self.path)


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """`parser` and every subcommand under it, depth first in definition order."""
    return _walk(parser, (parser.prog,), "")


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...], summary: str) -> list[Command]:
    # Usage and arguments read the same in any formatter class: a fixed width, not the terminal's.
    formatter = argparse.HelpFormatter(prog=parser.prog, width=_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help or "" for a in subparsers for c in a._choices_actions}
    found = [
        Command(
            path=path,
            help=summary,
            description=parser.description or "",
            raw_description=parser.formatter_class is not argparse.HelpFormatter,
            usage=formatter.format_help().strip(),
            arguments=tuple(
                _argument(formatter, action)
                for action in parser._actions
                if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
            ),
            subcommands=tuple((n, helps.get(n, "")) for a in subparsers for n in a.choices),
        )
    ]
    for action in subparsers:
        for name, sub in action.choices.items():
            found += _walk(sub, (*path, name), helps.get(name, ""))
    return found


def _argument(formatter: argparse.HelpFormatter, action: argparse.Action) -> Argument:
    described = formatter._expand_help(action) if action.help else ""
    default = action.default
    shown = (
        ""
        if default in (None, argparse.SUPPRESS) or isinstance(default, bool) or action.nargs == 0
        else str(default)
    )
    return Argument(formatter._format_action_invocation(action), described, shown)


def cli_page(parser: argparse.ArgumentParser | None = None) -> str:
    """The CLI reference page for `parser` (default: the `fleetflow` command's)."""
    if parser is None:
        from fleetflow.ops.cli import _parser

        parser = _parser()
    found = commands(parser)
    lines = [
        "# Command line",
        "",
        "Generated from the `fleetflow` command's parser when the site is built: every "
        "command and option below is what `fleetflow ... --help` shows. `-h`/`--help` "
        "works on every command.",
        "",
    ]
    for command in found:
        lines += _section(command)
    return "\n".join(lines)


def _section(command: Command) -> list[str]:
    lines = ["#" * max(2, len(command.path)) + " " + command.name, ""]
    if command.help:
        lines += [text(command.help), ""]
    if command.description and command.raw_description:
        lines += ["```text", command.description, "```", ""]
    elif command.description:
        lines += [prose(command.description), ""]
    lines += ["```text", command.usage, "```", ""]
    if command.subcommands:
        rows = [
            (f"[{name}](#{'-'.join((*command.path, name))})", text(summary))
            for name, summary in command.subcommands
        ]
        lines += [table(("Command", "What it does"), rows), ""]
    if command.arguments:
        cells = [
            (code(a.invocation), text(a.help), code(a.default) if a.default else "")
            for a in command.arguments
        ]
        lines += [table(("Argument", "Description", "Default"), cells), ""]
    return lines
