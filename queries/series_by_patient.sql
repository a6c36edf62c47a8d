-- name: series_by_patient
-- description: Every series of the given patients (PatientID as in IDC), optionally of one modality.
-- param patient_ids VARCHAR[]: PatientIDs, comma-separated on the command line (e.g. -p patient_ids=TCGA-F2-A7TX,TCGA-2J-AAB1)
-- param modality VARCHAR = NULL: DICOM Modality; NULL for all
SELECT
    collection_id,
    PatientID,
    StudyInstanceUID,
    SeriesInstanceUID,
    Modality,
    StudyDate,
    SeriesDescription,
    instanceCount,
    series_size_MB
FROM index
WHERE list_contains($patient_ids, PatientID)
  AND ($modality IS NULL OR Modality = $modality)
ORDER BY PatientID, StudyDate, SeriesInstanceUID
