"""Write docs/cli.md, the CLI reference, from the ``--help`` of every ``cohort`` command.

    python docs/cli_reference.py            # regenerate docs/cli.md (after adding or changing a command)
    python docs/cli_reference.py --check    # exit 1 when docs/cli.md is out of date

The text is click's own help output, rendered at a fixed width so it does not depend on the
terminal; tests/test_docs.py fails when docs/cli.md differs from what this prints, or when a
command or option has no help text.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from cohort.cli import cli

OUT = Path(__file__).resolve().parent / "cli.md"
WIDTH = 100
REGENERATE = "python docs/cli_reference.py"


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """(path, command) of the group and every command under it, depth first, in name order."""
    yield path, group
    ctx = click.Context(group, info_name="cohort")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def missing_help(group: click.Group = cli) -> list[str]:
    """Commands and options without help text, as ``cohort NAME --option`` (empty when all have it)."""
    missing = []
    for path, command in commands(group):
        name = " ".join(("cohort", *path))
        if not (command.help or command.short_help or "").strip():
            missing.append(name)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip():
                missing.append(f"{name} {max(param.opts, key=len)}")
    return missing


def help_text(path: tuple[str, ...]) -> str:
    """What ``cohort PATH --help`` prints, at WIDTH columns."""
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="cohort", terminal_width=WIDTH,
                                catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"cohort {' '.join(path)} --help exited {result.exit_code}: {result.output}")
    return result.output.rstrip() + "\n"


def render() -> str:
    parts = ["# `cohort` command reference\n",
             f"Generated from each command's `--help` by `{REGENERATE}`; do not edit by hand "
             "(tests/test_docs.py checks that it is current).\n"]
    listing = [f"- [`cohort {' '.join(path)}`](#{'cohort-' + '-'.join(path)})" for path, _ in commands() if path]
    parts.append("\n".join(listing) + "\n")
    for path, _ in commands():
        title = " ".join(("cohort", *path))
        parts.append(f"## {title}\n\n```text\n{help_text(path)}```\n")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
