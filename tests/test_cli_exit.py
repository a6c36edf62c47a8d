"""Exit codes tell the truth, Ctrl-C is "Interrupted." and 130 at any moment, and inputs that are not
manifests (a directory, a missing file, a line beyond the csv module's field limit) are clear errors.

Ctrl-C is a real SIGINT sent to a real ``cohort`` process at a known point: the CLI's test hook
``COHORT_TEST_CHECKPOINT=NAME`` makes it say ``checkpoint NAME`` on stderr when it gets there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from cohort import ManifestError
from cohort.cli import EXIT_INCOMPLETE, EXIT_INTERRUPTED, cli

COHORT = [sys.executable, "-m", "cohort.cli"]
#: A cohort query that runs for minutes (a join DuckDB can interrupt; a scalar subquery in WHERE it cannot).
SLOW_SQL = ("SELECT StudyInstanceUID, SeriesInstanceUID FROM index, "
            "(SELECT count(*) AS n FROM range(100000000000) t(i) WHERE i % 7 = 3) WHERE n < 0\n")


def _interrupt_at(checkpoint: str, *args: str, wait: float = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "COHORT_TEST_CHECKPOINT": checkpoint, "COHORT_TEST_CHECKPOINT_WAIT": str(wait)}
    proc = subprocess.Popen([*COHORT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        assert line.strip() == f"checkpoint {checkpoint}", line + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("checkpoint, wait", [("start", 60), ("query", 0)],
                         ids=["before-the-command", "while-the-cohort-query-runs"])
def test_ctrl_c_at_any_moment_is_interrupted_and_130(tmp_path, checkpoint, wait):
    slow = tmp_path / "slow.sql"
    slow.write_text(SLOW_SQL)
    run = _interrupt_at(checkpoint, "harvest", str(slow), "-o", str(tmp_path / "h"), "--url",
                        "http://127.0.0.1:9/dicom-web", "--no-progress", wait=wait)
    assert run.returncode == EXIT_INTERRUPTED, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "Interrupted."
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("make, message", [
    (lambda tmp: (tmp / "cohort_dir").mkdir() or tmp / "cohort_dir", "is a directory; give a manifest file"),
    (lambda tmp: tmp / "missing.csv", "missing.csv: no such file; give the path of an existing manifest"),
    (lambda tmp: tmp / "missing.s5cmd", "no such file"),
], ids=["directory", "missing-csv", "missing-s5cmd"])
def test_a_directory_or_missing_file_where_a_manifest_is_expected(tmp_path, make, message):
    path = make(tmp_path)
    for command in (["manifest", str(path), "-o", str(tmp_path / "out.csv")],
                    ["harvest", str(path), "-o", str(tmp_path / "h"), "--url", "http://127.0.0.1:9/dicom-web"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 1, result.output
        assert message in result.output and "query file" not in result.output


def test_a_manifest_line_longer_than_the_csv_field_limit(tmp_path):
    from cohort.manifest import read_manifest

    path = tmp_path / "long.csv"
    path.write_text("SeriesInstanceUID,note\n1.2.3,short\n1.2.4," + "x" * 200_000 + "\n")
    with pytest.raises(ManifestError, match=r"long.csv:3: cannot read this row as CSV: field larger than field "
                                            r"limit \(131072\)"):
        read_manifest(path)


class _Refusing:
    """A local server that answers every request 400 (not retried: an error at once)."""

    def __enter__(self):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_coverage_verify_with_errors_exits_3():
    with _Refusing() as url:
        result = CliRunner().invoke(cli, ["coverage", "series_by_collection", "-p", "collection_id=cmb_aml",
                                          "-p", "modality=CT", "--url", url, "--verify", "--sample", "3"])
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    assert "3 errors" in result.output and "Incomplete: 3 series could not be checked" in result.output
