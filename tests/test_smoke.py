from cohort import Cohort


def test_tcga_paad_sm_cohort_counts(catalog):
    c = Cohort.from_query("series_by_collection", collection_id="tcga_paad", modality="SM", catalog=catalog)
    n = catalog.sql(
        "SELECT count(*) AS n FROM index WHERE collection_id = 'tcga_paad' AND Modality = 'SM'"
    ).column("n")[0].as_py()
    assert n > 0
    assert c.counts.series == n
    assert c.counts.collections == 1
