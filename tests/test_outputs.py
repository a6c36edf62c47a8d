"""The CLI's file outputs: an unknown suffix is an error naming the formats; a file gets every row."""

from __future__ import annotations

from click.testing import CliRunner

from cohort.cli import cli

SQL = "SELECT SeriesInstanceUID FROM index ORDER BY SeriesInstanceUID LIMIT 120"


def test_an_unknown_output_suffix_is_an_error_naming_the_formats(tmp_path):
    out = tmp_path / "out.txt"
    result = CliRunner().invoke(cli, ["sql", SQL, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "cannot tell the format of" in result.output
    for suffix in (".csv", ".tsv", ".json", ".parquet"):
        assert suffix in result.output
    assert not out.exists()


def test_a_table_written_to_a_file_is_never_truncated(tmp_path, catalog):
    out = tmp_path / "out.txt"
    result = CliRunner().invoke(cli, ["sql", SQL, "-f", "table", "-o", str(out)])
    assert result.exit_code == 0, result.output
    expected = catalog.sql(SQL).column(0).to_pylist()
    lines = out.read_text().split()
    assert lines[0] == "SeriesInstanceUID" and lines[1:] == expected  # all 120 rows, no "..." line
    assert "wrote 120 rows" in result.output
