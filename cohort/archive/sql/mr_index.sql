-- Port of idc-index-data's mr_index.sql (BigQuery) to DuckDB over the archive's dicom_all view.
-- ARRAY_AGG(DISTINCT e IGNORE NULLS ORDER BY e) -> coalesce(list(DISTINCT e ORDER BY e) FILTER (WHERE e IS NOT NULL), [])
-- (BigQuery writes a NULL array as an empty REPEATED field); other changes as in ct_index.sql.
WITH mr_data AS (
  SELECT
    SeriesInstanceUID,
    ANY_VALUE(TRY_CAST(MagneticFieldStrength AS DOUBLE)) AS MagneticFieldStrength,
    ANY_VALUE(ScanningSequence) AS ScanningSequence,
    ANY_VALUE(SequenceVariant) AS SequenceVariant,
    ANY_VALUE(MRAcquisitionType) AS MRAcquisitionType,
    coalesce(list(DISTINCT TRY_CAST(EchoTime AS DOUBLE)
              ORDER BY TRY_CAST(EchoTime AS DOUBLE)) FILTER (WHERE TRY_CAST(EchoTime AS DOUBLE) IS NOT NULL), []) AS EchoTime,
    ANY_VALUE(TRY_CAST(RepetitionTime AS DOUBLE)) AS RepetitionTime,
    ANY_VALUE(TRY_CAST(EchoTrainLength AS BIGINT)) AS EchoTrainLength,
    ANY_VALUE(TRY_CAST(FlipAngle AS DOUBLE)) AS FlipAngle,
    ANY_VALUE(TRY_CAST(PixelBandwidth AS DOUBLE)) AS PixelBandwidth,
    ANY_VALUE(TRY_CAST(ImagingFrequency AS DOUBLE)) AS ImagingFrequency,
    ANY_VALUE(ImagedNucleus) AS ImagedNucleus,
    ANY_VALUE(TRY_CAST(PixelSpacing[1] AS DOUBLE)) AS PixelSpacing_row_mm,
    ANY_VALUE(TRY_CAST(PixelSpacing[2] AS DOUBLE)) AS PixelSpacing_col_mm,
    ANY_VALUE("Rows") AS "Rows",
    ANY_VALUE("Columns") AS "Columns",
    ANY_VALUE(TRY_CAST(SliceThickness AS DOUBLE)) AS SliceThickness,
    ANY_VALUE(TRY_CAST(InversionTime AS DOUBLE)) AS InversionTime,
    ANY_VALUE(ReceiveCoilName) AS ReceiveCoilName,
    ANY_VALUE(SequenceName) AS SequenceName,
    coalesce(list(DISTINCT DiffusionBValue
              ORDER BY DiffusionBValue) FILTER (WHERE DiffusionBValue IS NOT NULL), []) AS DiffusionBValue,
    ANY_VALUE(TRY_CAST(NumberOfTemporalPositions AS BIGINT)) AS NumberOfTemporalPositions
  FROM dicom_all
  WHERE SOPClassUID = '1.2.840.10008.5.1.4.1.1.4'
  GROUP BY SeriesInstanceUID
)
SELECT
  SeriesInstanceUID,
  MagneticFieldStrength,
  ScanningSequence,
  SequenceVariant,
  MRAcquisitionType,
  EchoTime,
  RepetitionTime,
  EchoTrainLength,
  FlipAngle,
  PixelBandwidth,
  ImagingFrequency,
  ImagedNucleus,
  PixelSpacing_row_mm,
  PixelSpacing_col_mm,
  "Rows",
  "Columns",
  SliceThickness,
  InversionTime,
  ReceiveCoilName,
  SequenceName,
  DiffusionBValue,
  NumberOfTemporalPositions
FROM mr_data
-- Sort by low-cardinality acquisition parameters first to improve parquet compression
ORDER BY
  MagneticFieldStrength NULLS LAST,
  ScanningSequence[1] NULLS LAST,
  MRAcquisitionType NULLS LAST,
  EchoTime[1] NULLS LAST,
  SeriesInstanceUID
