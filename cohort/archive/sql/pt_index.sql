-- Port of idc-index-data's pt_index.sql (BigQuery) to DuckDB over the archive's dicom_all view.
-- ARRAY_TO_STRING -> array_to_string; CAST(x AS STRING) -> CAST(x AS VARCHAR); other changes as in mr_index.sql.
WITH pt_data AS (
  SELECT
    SeriesInstanceUID,
    ANY_VALUE(NULLIF(array_to_string(SeriesType, '/'), '')) AS SeriesType,
    ANY_VALUE(Units) AS Units,
    ANY_VALUE(DecayCorrection) AS DecayCorrection,
    ANY_VALUE(CorrectedImage) AS CorrectedImage,
    ANY_VALUE(RandomsCorrectionMethod) AS RandomsCorrectionMethod,
    ANY_VALUE(ReconstructionMethod) AS ReconstructionMethod,
    coalesce(list(DISTINCT TRY_CAST(ActualFrameDuration AS DOUBLE)
              ORDER BY TRY_CAST(ActualFrameDuration AS DOUBLE)) FILTER (WHERE TRY_CAST(ActualFrameDuration AS DOUBLE) IS NOT NULL), []) AS ActualFrameDuration,
    ANY_VALUE(ScatterCorrectionMethod) AS ScatterCorrectionMethod,
    ANY_VALUE(AttenuationCorrectionMethod) AS AttenuationCorrectionMethod,
    ANY_VALUE(RadiopharmaceuticalInformationSequence[1].RadionuclideCodeSequence[1].CodeMeaning) AS RadionuclideCodeMeaning,
    ANY_VALUE(TRY_CAST(RadiopharmaceuticalInformationSequence[1].RadionuclideTotalDose AS DOUBLE)) AS RadionuclideTotalDose,
    CAST(ANY_VALUE(RadiopharmaceuticalInformationSequence[1].RadiopharmaceuticalStartTime) AS VARCHAR) AS RadiopharmaceuticalStartTime,
    ANY_VALUE(RadiopharmaceuticalInformationSequence[1].Radiopharmaceutical) AS Radiopharmaceutical,
    ANY_VALUE(TRY_CAST(PixelSpacing[1] AS DOUBLE)) AS PixelSpacing_row_mm,
    ANY_VALUE(TRY_CAST(PixelSpacing[2] AS DOUBLE)) AS PixelSpacing_col_mm,
    ANY_VALUE("Rows") AS "Rows",
    ANY_VALUE("Columns") AS "Columns",
    ANY_VALUE(TRY_CAST(SliceThickness AS DOUBLE)) AS SliceThickness,
    ANY_VALUE(NumberOfSlices) AS NumberOfSlices,
    ANY_VALUE(NumberOfTimeSlices) AS NumberOfTimeSlices
  FROM dicom_all
  WHERE SOPClassUID = '1.2.840.10008.5.1.4.1.1.128'
  GROUP BY SeriesInstanceUID
)
SELECT
  SeriesInstanceUID,
  SeriesType,
  Units,
  DecayCorrection,
  CorrectedImage,
  RandomsCorrectionMethod,
  ReconstructionMethod,
  ActualFrameDuration,
  ScatterCorrectionMethod,
  AttenuationCorrectionMethod,
  RadionuclideCodeMeaning,
  RadionuclideTotalDose,
  RadiopharmaceuticalStartTime,
  Radiopharmaceutical,
  PixelSpacing_row_mm,
  PixelSpacing_col_mm,
  "Rows",
  "Columns",
  SliceThickness,
  NumberOfSlices,
  NumberOfTimeSlices
FROM pt_data
-- Sort by low-cardinality acquisition parameters first to improve parquet compression
ORDER BY
  Units NULLS LAST,
  RadionuclideCodeMeaning NULLS LAST,
  SeriesInstanceUID
