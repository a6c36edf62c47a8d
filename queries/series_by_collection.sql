-- name: series_by_collection
-- description: Series of one collection, optionally of one modality.
-- param collection_id VARCHAR: IDC collection id, e.g. tcga_paad (see the collection_summary query)
-- param modality VARCHAR = NULL: DICOM Modality, e.g. SM, CT, MR, SEG; NULL for all
SELECT
    collection_id,
    PatientID,
    StudyInstanceUID,
    SeriesInstanceUID,
    Modality,
    SeriesDescription,
    instanceCount,
    series_size_MB
FROM index
WHERE collection_id = $collection_id
  AND ($modality IS NULL OR Modality = $modality)
ORDER BY PatientID, StudyInstanceUID, SeriesInstanceUID
