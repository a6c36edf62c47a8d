-- name: sm_by_organ
-- description: Slide microscopy (SM) series whose specimen comes from one organ (the DICOMweb tutorial's pancreas query, generalised). Needs sm_index.
-- param organ VARCHAR = 'Pancreas': CodeMeaning of the primary anatomic structure, case-insensitive (e.g. Pancreas, Lung, Breast)
SELECT
    index.collection_id,
    index.PatientID,
    index.StudyInstanceUID,
    sm_index.SeriesInstanceUID,
    sm_index.primaryAnatomicStructure_CodeMeaning,
    sm_index.ObjectiveLensPower,
    sm_index.min_PixelSpacing_2sf,
    sm_index.max_TotalPixelMatrixColumns,
    sm_index.max_TotalPixelMatrixRows,
    sm_index.staining_usingSubstance_CodeMeaning,
    index.instanceCount,
    index.series_size_MB
FROM sm_index
JOIN index ON sm_index.SeriesInstanceUID = index.SeriesInstanceUID
WHERE index.Modality = 'SM'
  AND lower(sm_index.primaryAnatomicStructure_CodeMeaning) = lower($organ)
ORDER BY index.collection_id, index.PatientID, sm_index.SeriesInstanceUID
