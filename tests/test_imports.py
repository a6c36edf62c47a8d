"""`import cohort` and a CSV query from the command line import only what they need (issue 13 item 2):
checked in fresh interpreters, through sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys

from cohort.tables import known_tables

#: Not needed to import the package, nor to print a query's result as CSV.
HEAVY = ("pandas", "requests", "tqdm", "pyarrow", "dicomweb_client", "google.auth",
         "cohort.harvest", "cohort.manifest", "cohort.coverage", "cohort.endpoints", "matplotlib", "cohort.charts")


def _heavy_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


def test_import_cohort_imports_none_of_them():
    assert _heavy_after("import cohort")[0] == []


def test_lazy_names_still_resolve():
    loaded, _ = _heavy_after("import cohort\ncohort.route, cohort.Policy, cohort.idc_proxy")
    assert "cohort.coverage" in loaded and "cohort.endpoints" in loaded


def test_query_file_as_csv_imports_none_of_them(tmp_path):
    query = tmp_path / "count.sql"
    query.write_text("SELECT count(*) AS n, min(collection_id) AS first FROM index\n")
    code = ("from cohort.cli import cli\n"
            f"cli.main(['query', {str(query)!r}, '-f', 'csv'], standalone_mode=False)")
    loaded, stdout = _heavy_after(code)
    assert loaded == []
    import pyarrow.parquet as pq

    pq_rows = pq.read_metadata(known_tables()["index"].bundled_path).num_rows
    header, row = stdout.splitlines()
    assert header == "n,first"
    assert row.split(",")[0] == str(pq_rows)
