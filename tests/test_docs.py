"""The CLI reference (docs/cli.md) is generated from ``--help`` and kept current; every command and
option has help text (as sqlite-utils' tests/test_docs.py does for its CLI)."""

from __future__ import annotations

import importlib.util
import re

import click
import pytest

from cohort.cli import cli
from conftest import REPO

REFERENCE = REPO / "docs" / "cli.md"


def _load_generator():
    spec = importlib.util.spec_from_file_location("cli_reference", REPO / "docs" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _all_commands(group: click.Group, path=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*path, name))
        else:
            yield (*path, name), command


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=" ".join)
def test_every_command_has_help_and_every_option_too(path):
    command = cli
    for name in path:
        command = command.get_command(click.Context(command), name)
    assert (command.help or "").strip(), f"cohort {' '.join(path)} has no docstring/help"
    undocumented = [p.opts for p in command.params
                    if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not undocumented, f"cohort {' '.join(path)}: options without help: {undocumented}"


def test_the_checker_finds_a_command_and_an_option_without_help():
    """The same check the reference generator applies, on a group with one fault of each kind."""

    @click.group()
    def group():
        """A group."""

    @group.command("silent")
    def silent():
        pass

    @group.command("half")
    @click.option("--documented", help="Has help.")
    @click.option("--bare")
    def half(documented, bare):
        """Has a docstring."""

    assert gen.missing_help(group) == ["cohort half --bare", "cohort silent"]
    assert gen.missing_help(cli) == []


def test_the_reference_covers_every_command_with_its_current_help():
    text = REFERENCE.read_text()
    headings = re.findall(r"^## (cohort.*)$", text, flags=re.M)
    expected = ["cohort"] + [" ".join(("cohort", *p)) for p, _ in _all_commands(cli)]
    assert sorted(headings) == sorted(expected), "commands added or removed: run `python docs/cli_reference.py`"
    for path, command in _all_commands(cli):
        section = text.split(f"## cohort {' '.join(path)}\n", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert max(param.opts, key=len) in section, (path, param.opts)


def test_the_reference_is_current():
    """docs/cli.md is exactly what the generator writes now (one command regenerates it)."""
    assert REFERENCE.read_text() == gen.render(), (
        f"{REFERENCE} is out of date: run `{gen.REGENERATE}` and commit docs/cli.md")


def test_the_generator_check_mode_fails_on_a_stale_reference(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "cli.md"
    stale.write_text(REFERENCE.read_text().replace("--index-dir", "--index-directory", 1))
    monkeypatch.setattr(gen, "OUT", stale)
    assert gen.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    monkeypatch.setattr(gen, "OUT", REFERENCE)
    assert gen.main(["--check"]) == 0


def test_the_readme_links_the_reference():
    assert "docs/cli.md" in (REPO / "README.md").read_text()
