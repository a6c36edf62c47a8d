"""The example notebook runs top to bottom against the shipped index, and shows the right numbers.

It is executed with nbclient in a real kernel (ipykernel, the test extra), and what it prints is
compared with counts made here with pyarrow straight from idc-index-data's Parquet file.
"""

from __future__ import annotations

import idc_index_data
import nbclient
import nbformat
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow  # a real kernel runs every cell: about a minute

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "01_select_a_cohort.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    return nb


def _text(cell) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def _cell(nb, source_start: str):
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    assert len(cells) == 1, f"no single code cell starting with {source_start!r}"
    return cells[0]


def _index():
    return pq.read_table(idc_index_data.IDC_INDEX_PARQUET_FILEPATH,
                         columns=["collection_id", "Modality", "SeriesInstanceUID", "StudyInstanceUID",
                                  "PatientID", "instanceCount"])


def _counts(table) -> str:
    """The start of Counts.__str__, computed with pyarrow."""
    series = table.num_rows
    studies = len(pc.unique(table["StudyInstanceUID"]))
    patients = len(pc.unique(table["PatientID"]))
    return f"{series:,} series, {studies:,} studies, {patients:,} patients"


def test_every_cell_ran_without_an_error(executed):
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]


def test_notebook_shows_counts_from_the_index(executed):
    index = _index()
    paad = index.filter(pc.equal(index["collection_id"], "tcga_paad"))
    assert paad.num_rows > 1000  # tcga_paad in IDC v25: a real cohort, not an empty one
    assert _text(_cell(executed, "paad = Cohort.from_query")).startswith(
        f"<Cohort series_by_collection IDC v{idc_index_data.__version__.split('.')[0]}: {_counts(paad)}")
    counts = _text(_cell(executed, "paad.counts"))
    assert f"series={paad.num_rows}," in counts and f"instances={pc.sum(paad['instanceCount']).as_py()}," in counts
    not_slides = paad.filter(pc.not_equal(paad["Modality"], "SM"))
    assert _text(_cell(executed, "slides = ")).startswith(_counts(not_slides))
    modalities = sorted(set(paad["Modality"].to_pylist()))
    by_modality = _text(_cell(executed, "paad.by_modality()"))
    for modality in modalities:
        n = pc.sum(pc.equal(paad["Modality"], modality)).as_py()
        assert any(line.split()[1:3] == [modality, str(n)] for line in by_modality.splitlines()), (modality, n)


def test_notebook_shows_the_row_of_the_uid_it_looks_up(executed):
    uid = "1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0"
    index = pq.read_table(idc_index_data.IDC_INDEX_PARQUET_FILEPATH,
                          columns=["SeriesInstanceUID", "collection_id", "Modality", "series_revised_idc_version"])
    row = index.filter(pc.equal(index["SeriesInstanceUID"], uid)).to_pylist()
    assert len(row) == 1
    lines = [line.split() for line in _text(_cell(executed, "mine = Cohort.from_uids")).splitlines()[1:] if line.strip()]
    assert lines == [["0", row[0]["collection_id"], row[0]["Modality"], str(row[0]["series_revised_idc_version"]), "True"]]


def test_notebook_licences_match_the_index(executed):
    index = pq.read_table(idc_index_data.IDC_INDEX_PARQUET_FILEPATH, columns=["collection_id", "license_short_name"])
    paad = index.filter(pc.equal(index["collection_id"], "tcga_paad"))
    text = _text(_cell(executed, "paad.licenses"))
    for licence in set(paad["license_short_name"].to_pylist()):
        n = pc.sum(pc.equal(paad["license_short_name"], licence)).as_py()
        assert f"{licence}     {n}" in text or f"{licence} {n}" in " ".join(text.split()), (licence, n)
