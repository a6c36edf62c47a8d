-- name: not_in_google_store
-- description: Series that the Google Healthcare store cannot serve as they are in this release: stored outside the idc-open-data bucket, or revised after the newest store.
-- param newest_store INTEGER = @newest_google_store: newest idc-store-vN that exists; default: the newest store `cohort coverage` assumes (the index's release minus 1)
-- param collection_id VARCHAR = NULL: restrict to one collection; NULL for all
SELECT
    collection_id,
    PatientID,
    StudyInstanceUID,
    SeriesInstanceUID,
    Modality,
    aws_bucket,
    series_revised_idc_version,
    CASE
        WHEN aws_bucket <> 'idc-open-data'
            THEN 'bucket ' || aws_bucket || ' is not replicated to the Google store'
        ELSE 'revised in v' || series_revised_idc_version || ', newest Google store is v' || $newest_store
    END AS reason,
    series_size_MB
FROM index
WHERE (aws_bucket <> 'idc-open-data' OR series_revised_idc_version > $newest_store)
  AND ($collection_id IS NULL OR collection_id = $collection_id)
ORDER BY collection_id, SeriesInstanceUID
