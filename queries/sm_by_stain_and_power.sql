-- name: sm_by_stain_and_power
-- description: Slide microscopy series stained with a substance, optionally at one objective lens power. Needs sm_index.
-- param stain VARCHAR = 'hematoxylin stain': staining substance CodeMeaning, case-insensitive (e.g. 'hematoxylin stain', 'water soluble eosin stain')
-- param power INTEGER = NULL: objective lens power (e.g. 20 or 40); NULL for any
SELECT
    index.collection_id,
    index.PatientID,
    index.StudyInstanceUID,
    sm_index.SeriesInstanceUID,
    sm_index.staining_usingSubstance_CodeMeaning,
    sm_index.ObjectiveLensPower,
    sm_index.min_PixelSpacing_2sf,
    sm_index.primaryAnatomicStructure_CodeMeaning,
    index.series_size_MB
FROM sm_index
JOIN index ON sm_index.SeriesInstanceUID = index.SeriesInstanceUID
WHERE len(list_filter(sm_index.staining_usingSubstance_CodeMeaning, s -> lower(s) = lower($stain))) > 0
  AND ($power IS NULL OR sm_index.ObjectiveLensPower = $power)
ORDER BY index.collection_id, sm_index.SeriesInstanceUID
