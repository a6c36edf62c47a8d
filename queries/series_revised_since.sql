-- name: series_revised_since
-- description: Series added or revised in or after an IDC release: what changed for a cohort pinned to an older release.
-- param since INTEGER: IDC release number, e.g. 20
-- param collection_id VARCHAR = NULL: restrict to one collection; NULL for all
SELECT
    collection_id,
    PatientID,
    StudyInstanceUID,
    SeriesInstanceUID,
    Modality,
    series_init_idc_version,
    series_revised_idc_version,
    series_size_MB
FROM index
WHERE series_revised_idc_version >= $since
  AND ($collection_id IS NULL OR collection_id = $collection_id)
ORDER BY series_revised_idc_version DESC, collection_id, SeriesInstanceUID
