"""The README's terminal examples print what the README says they print.

Every ```console block of README.md is run, command by command (``$ cohort ...``, parsed with shlex;
the ``cohort`` CLI is invoked in-process through click's test runner, in an empty working
directory), and what it prints (stdout and stderr, as a terminal shows them) is compared with the
lines under the command in the README, after normalising what differs from run to run (timings,
progress bars, the working directory, free disk space, harvested byte counts, the one-time "local
index copy" notice, whether doi.org is reachable). A block after ``<!-- server: ... -->`` runs
against an Orthanc started here holding cmb_aml's CT series under their real UIDs (the README's
``http://127.0.0.1:8042/dicom-web`` stands for its URL). A block is skipped only when the line
before it is ``<!-- unchecked: REASON -->``, and the REASON must name where the same behaviour is
tested. Python blocks with ``>>>`` are run as doctests.
"""

from __future__ import annotations

import doctest
import re
import shlex
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from cohort.cli import cli
from conftest import REPO

README = REPO / "README.md"
#: the working directory the README's examples show (the real one is a fresh temp dir)
SHOWN_CWD = "/tmp/readme_demo"
UNCHECKED = re.compile(r"^<!-- unchecked: (.+) -->$")
#: a block run against a local Orthanc holding cmb_aml's CT series (real UIDs), shown at SHOWN_URL
SERVER = re.compile(r"^<!-- server: (.+) -->$")
SHOWN_URL = "http://127.0.0.1:8042/dicom-web"


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line of the command in README.md
    command: str
    expected: str


@dataclass(frozen=True)
class Block:
    line: int
    kind: str  # console | python
    text: str
    unchecked: str | None
    server: bool = False


def blocks(text: str) -> list[Block]:
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if fence:
            start, body = i, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = lines[start - 1].strip() if start else ""
            marker = UNCHECKED.match(before)
            found.append(Block(start + 1, fence.group(1), "\n".join(body), marker.group(1) if marker else None,
                               bool(SERVER.match(before))))
        i += 1
    return found


def examples(block: Block) -> list[Example]:
    out: list[Example] = []
    command, start, expected = None, 0, []
    for n, line in enumerate(block.text.splitlines(), start=block.line + 1):
        if line.startswith("$ "):
            if command is not None:
                out.append(Example(start, command, "\n".join(expected)))
            command, start, expected = line[2:], n, []
        elif command is not None:
            expected.append(line)
    if command is not None:
        out.append(Example(start, command, "\n".join(expected)))
    return out


def normalise(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if re.match(r"^(local index copy|making the local index copy|made the local index copy)", line):
            continue  # the one-time build of the UID-lookup cache (README "Performance")
        if re.match(r"^harvest: .*series/s", line) or not line.strip("\r"):
            continue  # the progress bar
        line = re.sub(r"[\d.]+ MB in [\d.]+ s \(\d+ instances/s\)", "N MB in N s (N instances/s)", line)  # timings
        line = re.sub(r"^( *ok +True +\d+ +\d+) +\d+$", r"\1 N", line)  # bytes: UIDs differ in length per run
        line = re.sub(r"(citations: \d+ DOIs?): .*", r"\1: ...", line)  # fetched, or skipped offline
        line = re.sub(r"[\d,]+ bytes free", "N bytes free", line)  # the disk of this machine
        lines.append(line.rstrip())
    return "\n".join(lines).strip("\n")


def run(command: str, cwd, url: str | None = None) -> str:
    if url:
        command = command.replace(SHOWN_URL, url)
    argv = shlex.split(command.replace("\\$", "$"), comments=True)
    assert argv[0] == "cohort", f"README examples run `cohort`, not {argv[0]!r}"
    result = CliRunner().invoke(cli, argv[1:], prog_name="cohort", catch_exceptions=False)
    output = result.output.replace(str(cwd), SHOWN_CWD).replace(f"{REPO}/", "")
    return output.replace(url, SHOWN_URL) if url else output


ALL = blocks(README.read_text())
CHECKED = [b for b in ALL if b.kind == "console" and b.unchecked is None and not b.server]
WITH_SERVER = [b for b in ALL if b.kind == "console" and b.server]
DOCTESTS = [b for b in ALL if b.kind == "python" and ">>>" in b.text and b.unchecked is None]


def test_most_console_blocks_are_checked_and_the_others_say_why():
    consoles = [b for b in ALL if b.kind == "console"]
    checked = len(CHECKED) + len(WITH_SERVER)
    assert len(CHECKED) >= 5 and WITH_SERVER and checked > len(consoles) - checked
    for block in ALL:
        if block.unchecked is not None:
            assert re.search(r"test_\w+\.py|notebook", block.unchecked), (
                f"README.md:{block.line}: say which test checks this instead ({block.unchecked!r})")


def check_block(block: Block, cwd, url: str | None = None) -> None:
    found = examples(block)
    assert found, f"README.md:{block.line}: a console block without `$ ` commands"
    for example in found:
        shown = normalise(example.expected)
        printed = normalise(run(example.command, cwd, url))
        assert printed == shown, f"README.md:{example.line}: `{example.command}` printed:\n{printed}"


@pytest.mark.parametrize("block", CHECKED, ids=lambda b: f"README.md:{b.line}")
def test_console_block_prints_what_the_readme_shows(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COHORT_INDEX_DIR", raising=False)
    check_block(block, tmp_path)


@pytest.fixture(scope="module")
def aml_server(tmp_path_factory, catalog):
    """An Orthanc holding small CT series (pydicom's CT_small, 3 instances each) under cmb_aml's real CT UIDs."""
    from tests.support.data import bulk_series
    from tests.support.orthanc import Orthanc, require_orthanc

    require_orthanc()
    rows = catalog.sql("SELECT StudyInstanceUID, SeriesInstanceUID FROM index WHERE collection_id = 'cmb_aml' "
                       "AND Modality = 'CT' ORDER BY SeriesInstanceUID").to_pylist()
    uids = [(r["StudyInstanceUID"], r["SeriesInstanceUID"]) for r in rows]
    records = bulk_series(len(uids), 3, tmp_path_factory.mktemp("aml"), uids=uids)
    with Orthanc() as server:
        server.load(records)
        assert not server.skipped
        yield server


@pytest.mark.orthanc
@pytest.mark.parametrize("block", WITH_SERVER, ids=lambda b: f"README.md:{b.line}")
def test_console_block_with_a_dicomweb_server_prints_what_the_readme_shows(block, aml_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COHORT_INDEX_DIR", raising=False)
    check_block(block, tmp_path, aml_server.dicomweb_url)


def test_the_normaliser_keeps_what_matters():
    """A wrong count is still a difference; only the listed run-to-run fields are masked."""
    shown = "wrote 20 series (11.83 GB) to x.s5cmd [s5cmd, aws]; citations: 2 DOIs: 2 fetched"
    assert normalise(shown) == normalise(shown.replace("2 fetched", "2 skipped (DOI resolver unreachable)"))
    assert normalise(shown) != normalise(shown.replace("20 series", "21 series"))
    assert normalise(shown) != normalise(shown.replace("2 DOIs", "3 DOIs"))
    space = "needs 11,829,970,000 bytes; 71,362,387,968 bytes free"
    assert normalise(space) == normalise(space.replace("71,362,387,968", "5,000"))
    assert normalise(space) != normalise(space.replace("11,829,970,000", "11,829,970,001"))
    done = "40 series (0 already complete; this run: ok 40), 120 instances, 2.3 MB in 3.3 s (37 instances/s) -> aml"
    assert normalise(done) == normalise(done.replace("3.3 s (37", "9.1 s (13"))
    assert normalise(done) != normalise(done.replace("120 instances", "119 instances"))
    status = "    ok      True      40        120 2334466"
    assert normalise(status) == normalise(status.replace("2334466", "2295910"))
    assert normalise(status) != normalise(status.replace("120", "121"))


@pytest.mark.parametrize("block", DOCTESTS, ids=lambda b: f"README.md:{b.line}")
def test_python_block_runs_as_a_doctest(block):
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.text, {}, f"README.md:{block.line}", str(README), block.line)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries > 0, f"README.md:{block.line}: see the doctest output above"
