-- name: collection_summary
-- description: One row per collection: patients, studies, series, instances, size, modalities and licences (a report, not a cohort).
-- param modality VARCHAR = NULL: count only series of this Modality; NULL for all
SELECT
    collection_id,
    count(DISTINCT PatientID) AS patients,
    count(DISTINCT StudyInstanceUID) AS studies,
    count(*) AS series,
    sum(instanceCount)::BIGINT AS instances,
    round(sum(series_size_MB) / 1000, 2) AS size_GB,
    string_agg(DISTINCT Modality, ',' ORDER BY Modality) AS modalities,
    string_agg(DISTINCT license_short_name, '; ' ORDER BY license_short_name) AS licenses
FROM index
WHERE $modality IS NULL OR Modality = $modality
GROUP BY collection_id
ORDER BY series DESC, collection_id
