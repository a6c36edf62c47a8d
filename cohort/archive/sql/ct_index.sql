-- Port of idc-index-data's ct_index.sql (BigQuery) to DuckDB over the archive's dicom_all view.
-- SAFE_CAST(x AS FLOAT64) -> TRY_CAST(x AS DOUBLE); x[SAFE_OFFSET(0)] -> x[1]; `Rows` -> "Rows".
WITH ct_data AS (
  SELECT
    SeriesInstanceUID,
    ANY_VALUE(ImageType) AS ImageType,
    ANY_VALUE(TRY_CAST(PixelSpacing[1] AS DOUBLE)) AS PixelSpacing_row_mm,
    ANY_VALUE(TRY_CAST(PixelSpacing[2] AS DOUBLE)) AS PixelSpacing_col_mm,
    ANY_VALUE("Rows") AS "Rows",
    ANY_VALUE("Columns") AS "Columns",
    ANY_VALUE(TRY_CAST(SliceThickness AS DOUBLE)) AS SliceThickness,
    ANY_VALUE(TRY_CAST(KVP AS DOUBLE)) AS KVP,
    ANY_VALUE(ScanOptions) AS ScanOptions,
    ANY_VALUE(ConvolutionKernel) AS ConvolutionKernel,
    ANY_VALUE(TRY_CAST(GantryDetectorTilt AS DOUBLE)) AS GantryDetectorTilt,
    MIN(TRY_CAST(XRayTubeCurrent AS DOUBLE)) AS XRayTubeCurrent_min,
    MAX(TRY_CAST(XRayTubeCurrent AS DOUBLE)) AS XRayTubeCurrent_max,
    ANY_VALUE(FilterType) AS FilterType,
    MIN(TRY_CAST(Exposure AS DOUBLE)) AS Exposure_min,
    MAX(TRY_CAST(Exposure AS DOUBLE)) AS Exposure_max,
    MIN(TRY_CAST(ExposureTime AS DOUBLE)) AS ExposureTime_min,
    MAX(TRY_CAST(ExposureTime AS DOUBLE)) AS ExposureTime_max,
    ANY_VALUE(TRY_CAST(DataCollectionDiameter AS DOUBLE)) AS DataCollectionDiameter,
    ANY_VALUE(TRY_CAST(ReconstructionDiameter AS DOUBLE)) AS ReconstructionDiameter,
    ANY_VALUE(SpiralPitchFactor) AS SpiralPitchFactor
  FROM dicom_all
  WHERE SOPClassUID = '1.2.840.10008.5.1.4.1.1.2'
  GROUP BY SeriesInstanceUID
)
SELECT
  SeriesInstanceUID,
  ImageType,
  PixelSpacing_row_mm,
  PixelSpacing_col_mm,
  "Rows",
  "Columns",
  SliceThickness,
  KVP,
  ScanOptions,
  ConvolutionKernel,
  GantryDetectorTilt,
  XRayTubeCurrent_min,
  XRayTubeCurrent_max,
  FilterType,
  Exposure_min,
  Exposure_max,
  ExposureTime_min,
  ExposureTime_max,
  DataCollectionDiameter,
  ReconstructionDiameter,
  SpiralPitchFactor
FROM ct_data
-- Sort by low-cardinality acquisition parameters first to improve parquet compression
ORDER BY
  KVP NULLS LAST,
  ConvolutionKernel[1] NULLS LAST,
  SliceThickness NULLS LAST,
  SeriesInstanceUID
