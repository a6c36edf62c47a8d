-- name: not_in_google_store
-- description: Series that the Google Healthcare store cannot serve as they are in this release: stored outside the idc-open-data bucket, or revised after the newest store.
-- param newest_store INTEGER = NULL: newest idc-store-vN that exists; NULL means the index's own release
-- param collection_id VARCHAR = NULL: restrict to one collection; NULL for all
WITH newest AS (
    SELECT coalesce($newest_store, (SELECT max(idc_version) FROM version_metadata_index)) AS v
)
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
        ELSE 'revised in v' || series_revised_idc_version || ', newest Google store is v' || (SELECT v FROM newest)
    END AS reason,
    series_size_MB
FROM index
WHERE (aws_bucket <> 'idc-open-data' OR series_revised_idc_version > (SELECT v FROM newest))
  AND ($collection_id IS NULL OR collection_id = $collection_id)
ORDER BY collection_id, SeriesInstanceUID
