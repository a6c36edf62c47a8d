-- name: series_with_segmentation
-- description: Image series that at least one DICOM SEG segments, with the number of segmentations and what they segment. Needs seg_index.
-- param collection_id VARCHAR = NULL: restrict to one collection; NULL for all
-- param modality VARCHAR = NULL: Modality of the segmented series (e.g. CT); NULL for all
SELECT
    index.collection_id,
    index.PatientID,
    index.StudyInstanceUID,
    index.SeriesInstanceUID,
    index.Modality,
    count(DISTINCT seg_index.SeriesInstanceUID) AS segmentations,
    list(DISTINCT seg_index.AlgorithmType) FILTER (WHERE seg_index.AlgorithmType IS NOT NULL) AS algorithm_types,
    index.series_size_MB
FROM seg_index
JOIN index ON seg_index.segmented_SeriesInstanceUID = index.SeriesInstanceUID
WHERE ($collection_id IS NULL OR index.collection_id = $collection_id)
  AND ($modality IS NULL OR index.Modality = $modality)
GROUP BY ALL
ORDER BY index.collection_id, index.SeriesInstanceUID
