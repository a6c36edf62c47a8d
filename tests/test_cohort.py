"""Cohort: constructors, counts against independent SQL, summaries, licences, set operations, provenance."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from cohort import Cohort, CohortInputError, Counts
from fixtures.index_tables import PANCREAS_SLIDE

PAAD_SQL = "SELECT SeriesInstanceUID FROM index WHERE collection_id = $c"
SM_SQL = "SELECT SeriesInstanceUID FROM index WHERE Modality = 'SM' AND collection_id IN ('tcga_paad', 'tcga_luad')"


def _one(catalog, sql: str, params=None):
    return catalog.sql(sql, params).to_pylist()[0]


@pytest.fixture(scope="module")
def paad(catalog) -> Cohort:
    return Cohort.from_sql(PAAD_SQL, {"c": "tcga_paad"}, catalog=catalog)


@pytest.fixture(scope="module")
def prior_only(catalog) -> list[str]:
    """Three series that are in prior_versions_index but no longer in index."""
    return catalog.sql(
        "SELECT DISTINCT SeriesInstanceUID FROM prior_versions_index "
        "WHERE SeriesInstanceUID NOT IN (SELECT SeriesInstanceUID FROM index) ORDER BY 1 LIMIT 3"
    ).column(0).to_pylist()


def test_counts_equal_independent_sql(paad, catalog):
    expected = _one(catalog, (
        "SELECT count(DISTINCT collection_id) AS collections, count(DISTINCT PatientID) AS patients, "
        "count(DISTINCT StudyInstanceUID) AS studies, count(*) AS series, sum(instanceCount) AS instances, "
        "sum(series_size_MB) / 1000 AS size_gb FROM index WHERE collection_id = 'tcga_paad'"
    ))
    c = paad.counts
    assert isinstance(c, Counts)
    assert (c.collections, c.patients, c.studies, c.series, c.instances) == (
        1, expected["patients"], expected["studies"], expected["series"], expected["instances"]
    )
    assert c.size_gb == pytest.approx(float(expected["size_gb"]))
    assert len(paad) == c.series and f"{c.series:,} series" in str(c)


def test_from_query_is_the_same_cohort_as_from_sql(paad, catalog):
    q = Cohort.from_query("series_by_collection", collection_id="tcga_paad", catalog=catalog)
    assert set(q.series_uids) == set(paad.series_uids)
    assert q.provenance.query_name == "series_by_collection"
    assert q.provenance.params == {"collection_id": "tcga_paad", "modality": None}


def test_to_arrow_has_one_row_per_series_with_index_columns(paad, catalog):
    t = paad.to_arrow()
    assert t.num_rows == len(paad)
    index_columns = catalog.columns("index")
    assert t.column_names == index_columns + ["in_current_release"]
    assert set(t.column("in_current_release").to_pylist()) == {True}


def test_from_uids_accepts_prior_versions_and_marks_them(prior_only, catalog):
    c = Cohort.from_uids([PANCREAS_SLIDE, *prior_only, PANCREAS_SLIDE, " "], catalog=catalog)
    assert c.series_uids == [PANCREAS_SLIDE, *prior_only]  # de-duplicated, blanks dropped, in order
    rows = {r["SeriesInstanceUID"]: r for r in c.to_arrow().to_pylist()}
    assert rows[PANCREAS_SLIDE]["in_current_release"] is True
    assert rows[PANCREAS_SLIDE]["series_revised_idc_version"] == 10  # not the v8-v9 version in prior_versions_index
    for uid in prior_only:
        row = rows[uid]
        newest = _one(catalog, "SELECT max(max_idc_version) AS v, min(min_idc_version) AS first, "
                               "arg_max(min_idc_version, max_idc_version) AS made FROM prior_versions_index "
                               "WHERE SeriesInstanceUID = $u", {"u": uid})
        assert row["in_current_release"] is False
        assert row["series_init_idc_version"] == newest["first"]
        assert row["series_revised_idc_version"] == newest["made"]
        assert row["collection_id"] and row["crdc_series_uuid"]


def test_from_uids_lists_unknown_uids(catalog):
    study = "2.25.25332367070577326639024635995523878122"  # a StudyInstanceUID, not a series
    with pytest.raises(CohortInputError) as err:
        Cohort.from_uids([PANCREAS_SLIDE, "1.2.3.4.5", study], catalog=catalog)
    msg = str(err.value)
    assert "2 of 3 SeriesInstanceUIDs" in msg and "1.2.3.4.5" in msg and study in msg
    assert PANCREAS_SLIDE not in msg


def test_a_query_without_series_uids_is_not_a_cohort(catalog):
    with pytest.raises(CohortInputError, match="must return a SeriesInstanceUID column"):
        Cohort.from_query("collection_summary", catalog=catalog)


def test_summaries_add_up_to_the_counts(paad):
    by_col = paad.by_collection()
    assert by_col.collection_id.tolist() == ["tcga_paad"]
    by_mod = paad.by_modality()
    assert by_mod.series.sum() == paad.counts.series
    assert by_mod.instances.sum() == paad.counts.instances
    assert list(by_mod.series) == sorted(by_mod.series, reverse=True)
    by_two = paad.summary(["Modality", "license_short_name"])
    assert by_two.series.sum() == paad.counts.series
    with pytest.raises(CohortInputError, match="cannot summarise by Modalty"):
        paad.summary("Modalty")


def test_licenses(paad, catalog):
    lic = paad.licenses
    expected = catalog.df(
        "SELECT license_short_name, count(*) AS series FROM index WHERE collection_id = 'tcga_paad' GROUP BY 1"
    )
    assert dict(zip(lic.license_short_name, lic.series)) == dict(zip(expected.license_short_name, expected.series))
    assert all(len(dois) >= 1 for dois in lic.source_DOIs)


def test_set_operations_match_python_sets(paad, catalog):
    sm = Cohort.from_sql(SM_SQL, catalog=catalog)
    a, b = set(paad.series_uids), set(sm.series_uids)
    assert a & b and a - b and b - a  # a real overlap
    for combined, expected in ((paad | sm, a | b), (paad & sm, a & b), (paad - sm, a - b), (sm - paad, b - a)):
        assert set(combined.series_uids) == expected
        assert len(combined.series_uids) == len(expected)
        assert combined.counts.series == len(expected)
    both = paad & sm
    assert both.counts.series == _one(
        catalog, "SELECT count(*) AS n FROM index WHERE collection_id = 'tcga_paad' AND Modality = 'SM'")["n"]
    assert both.provenance.query_name == "(sql(c='tcga_paad') & sql)"  # parameters kept in the name
    assert both.provenance.params["left"]["sql"] == PAAD_SQL
    assert (paad & sm).provenance.sha256 == both.provenance.sha256
    assert (sm & paad).provenance.sha256 != both.provenance.sha256
    with pytest.raises(TypeError):
        paad | paad.series_uids


def test_provenance(paad, catalog):
    p = paad.provenance
    assert p.idc_version == 25
    assert p.idc_index_data_version == version("idc-index-data") == "25.0.5"
    assert p.sql == PAAD_SQL and p.params == {"c": "tcga_paad"}
    again = Cohort.from_sql(PAAD_SQL, {"c": "tcga_paad"}, catalog=catalog).provenance
    assert again.sha256 == p.sha256 and len(p.sha256) == 64
    other = Cohort.from_sql(PAAD_SQL, {"c": "tcga_luad"}, catalog=catalog).provenance
    assert other.sha256 != p.sha256
    assert p.to_dict()["params"] == {"c": "tcga_paad"} and "created" not in p.recipe()
    uids = paad.series_uids[:3]
    assert Cohort.from_uids(uids, catalog=catalog).provenance.sha256 == \
        Cohort.from_uids(list(reversed(uids)), catalog=catalog).provenance.sha256
    assert Cohort.from_uids(uids, catalog=catalog).provenance.sha256 != \
        Cohort.from_uids(paad.series_uids[3:6], catalog=catalog).provenance.sha256


def test_cohort_sql_sees_the_cohort_table(paad):
    n = paad.sql("SELECT count(*) AS n FROM cohort JOIN index USING (SeriesInstanceUID) WHERE index.Modality = 'SM'")
    assert n.column("n")[0].as_py() == paad.summary("Modality").set_index("Modality").loc["SM", "series"]


def test_repr_html_shows_counts(paad):
    html = paad._repr_html_()
    c = paad.counts
    for text in (f"{c.series:,} series", f"{c.studies:,} studies", f"{c.patients:,} patients", "IDC v25",
                 "tcga_paad", paad.provenance.sha256[:12]):
        assert text in html
    assert repr(paad).startswith("<Cohort sql IDC v25: ")


# -- issue 12 item 7: the Python API takes what the CLI takes -------------------------------------
def test_from_sql_takes_keyword_parameters_like_from_query(paad, catalog):
    c = Cohort.from_sql(PAAD_SQL, c="tcga_paad", catalog=catalog)
    assert set(c.series_uids) == set(paad.series_uids) and len(c) == 1414  # IDC v25
    assert c.provenance.params == {"c": "tcga_paad"}
    assert c.provenance.sha256 == paad.provenance.sha256  # same SQL and parameters as the dict form


def test_from_uids_takes_one_uid_string_as_one_uid(catalog):
    c = Cohort.from_uids(PANCREAS_SLIDE, catalog=catalog)
    assert c.series_uids == [PANCREAS_SLIDE] and len(c) == 1
    with pytest.raises(CohortInputError, match="SeriesInstanceUIDs are strings; got int 7"):
        Cohort.from_uids([PANCREAS_SLIDE, 7], catalog=catalog)
    with pytest.raises(CohortInputError, match="got int"):
        Cohort.from_uids(7, catalog=catalog)


# -- issue 12 item 10: plurals and names of combined cohorts ---------------------------------------
def test_counts_use_singular_for_one():
    text = str(Counts(collections=1, patients=1, studies=1, series=1, instances=1, size_gb=0.5))
    assert text == "1 series, 1 study, 1 patient, 1 collection, 1 instance, 0.50 GB"
    assert "2 studies, 3 patients, 2 collections, 5 instances" in str(Counts(2, 3, 2, 4, 5, 1.0))


def test_set_operation_names_keep_their_parameters(catalog):
    every = Cohort.from_query("series_by_collection", collection_id="tcga_paad", catalog=catalog)
    sm = Cohort.from_query("series_by_collection", collection_id="tcga_paad", modality="SM", catalog=catalog)
    diff = every - sm
    assert diff.provenance.query_name == (
        "(series_by_collection(collection_id='tcga_paad') - "
        "series_by_collection(collection_id='tcga_paad', modality='SM'))")
    assert len(diff) == 1414 - 466  # IDC v25
    assert repr(diff).startswith(f"<Cohort {diff.provenance.query_name} IDC v25: 948 series")


def test_params_that_are_not_a_dict_are_a_clear_error(catalog):
    from cohort import ParameterError

    with pytest.raises(ParameterError, match="from_sql: params must be a dict of name -> value, got str"):
        Cohort.from_sql(PAAD_SQL, "tcga_paad", catalog=catalog)
    with pytest.raises(ParameterError, match="from_query: params must be a dict"):
        Cohort.from_query("series_by_collection", ["tcga_paad"], catalog=catalog)
