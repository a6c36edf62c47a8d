-- Port of idc-index-data's sm_instance_index.sql (BigQuery) to DuckDB over the archive's dicom_all view.
-- Dialect changes as in sm_index.sql (and the UNNEST chain, see there). instance_size and crdc_instance_uuid are IDC's (NULL in an archive).
WITH
  SpecimenPreparationSequence_unnested AS (
      -- BigQuery: FROM dicom_all, UNNEST(SpecimenDescriptionSequence[SAFE_OFFSET(0)].SpecimenPreparationSequence) AS
      -- preparation_unnest_step1, UNNEST(....SpecimenPreparationStepContentItemSequence) AS preparation_unnest_step2,
      -- UNNEST(....ConceptNameCodeSequence) AS concept_name_code_sequence, UNNEST(....ConceptCodeSequence) AS
      -- concept_code_sequence. The same cross product, as nested list_transform + flatten + unnest: DuckDB runs
      -- a chain of lateral UNNEST joins 30x slower (it joins on the whole outer row).
      SELECT
        SOPInstanceUID,
        p.concept_name_code_sequence.CodeMeaning AS cnc_cm,
        p.concept_name_code_sequence.CodingSchemeDesignator AS cnc_csd,
        p.concept_name_code_sequence.CodeValue AS cnc_val,
        p.concept_code_sequence.CodeMeaning AS ccs_cm,
        p.concept_code_sequence.CodingSchemeDesignator AS ccs_csd,
        p.concept_code_sequence.CodeValue AS ccs_val,
      FROM (
        SELECT SOPInstanceUID, unnest(flatten(flatten(flatten(
          list_transform(SpecimenDescriptionSequence[1].SpecimenPreparationSequence, preparation_unnest_step1 ->
          list_transform(preparation_unnest_step1.SpecimenPreparationStepContentItemSequence, preparation_unnest_step2 ->
          list_transform(preparation_unnest_step2.ConceptNameCodeSequence, concept_name_code_sequence ->
          list_transform(preparation_unnest_step2.ConceptCodeSequence, concept_code_sequence ->
            {'concept_name_code_sequence': concept_name_code_sequence, 'concept_code_sequence': concept_code_sequence}))))))))
          AS p
        FROM dicom_all)
    ),
  slide_embedding AS (
  SELECT
    SOPInstanceUID,
    list(DISTINCT (ccs_cm || ':' || ccs_csd || ':' || ccs_val) ORDER BY (ccs_cm || ':' || ccs_csd || ':' || ccs_val)) AS embeddingMedium_code_str
  FROM
    SpecimenPreparationSequence_unnested
  WHERE
    (cnc_csd = 'SCT'
      AND cnc_val = '430863003') -- CodeMeaning is 'Embedding medium'
  GROUP BY
    SOPInstanceUID ),
  slide_fixative AS (
  SELECT
    SOPInstanceUID,
    list(DISTINCT (ccs_cm || ':' || ccs_csd || ':' || ccs_val) ORDER BY (ccs_cm || ':' || ccs_csd || ':' || ccs_val)) AS tissueFixative_code_str
  FROM
    SpecimenPreparationSequence_unnested
  WHERE
    (cnc_csd = 'SCT'
      AND cnc_val = '430864009') -- CodeMeaning is 'Tissue Fixative'
  GROUP BY
    SOPInstanceUID ),
  slide_staining AS (
  SELECT
    SOPInstanceUID,
    list(DISTINCT (ccs_cm || ':' || ccs_csd || ':' || ccs_val) ORDER BY (ccs_cm || ':' || ccs_csd || ':' || ccs_val)) AS staining_usingSubstance_code_str,
  FROM
    SpecimenPreparationSequence_unnested
  WHERE
    (cnc_csd = 'SCT'
      AND cnc_val = '424361007') -- CodeMeaning is 'Using substance'
  GROUP BY
    SOPInstanceUID )
SELECT
  dicom_all.SOPInstanceUID AS SOPInstanceUID,
  dicom_all.SeriesInstanceUID AS SeriesInstanceUID,
  -- Embedding Medium
  list_transform(coalesce(embeddingMedium_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE string_split(code, ':')[1] END) AS embeddingMedium_CodeMeaning,
  list_transform(coalesce(embeddingMedium_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE
      CASE WHEN strpos(code, ':') = 0 THEN NULL ELSE substr(code, strpos(code, ':') + 1) END END) AS embeddingMedium_code_designator_value_str,
  -- Tissue Fixative
  list_transform(coalesce(tissueFixative_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE string_split(code, ':')[1] END) AS tissueFixative_CodeMeaning,
  list_transform(coalesce(tissueFixative_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE
      CASE WHEN strpos(code, ':') = 0 THEN NULL ELSE substr(code, strpos(code, ':') + 1) END END) AS tissueFixative_code_designator_value_str,
  -- Staining using substance
  list_transform(coalesce(staining_usingSubstance_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE string_split(code, ':')[1] END) AS staining_usingSubstance_CodeMeaning,
  list_transform(coalesce(staining_usingSubstance_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE
      CASE WHEN strpos(code, ':') = 0 THEN NULL ELSE substr(code, strpos(code, ':') + 1) END END) AS staining_usingSubstance_code_designator_value_str,
  -- instance-specific image attributes
  TRY_CAST(SharedFunctionalGroupsSequence[1].PixelMeasuresSequence[1].PixelSpacing[1] AS DOUBLE) AS PixelSpacing_0,
  dicom_all.ImageType AS ImageType,
  dicom_all.TransferSyntaxUID AS TransferSyntaxUID,
  dicom_all.instance_size AS instance_size,
  dicom_all.TotalPixelMatrixColumns AS TotalPixelMatrixColumns,
  dicom_all.TotalPixelMatrixRows AS TotalPixelMatrixRows,
  -- attributes needed to retrieve the selected instances/files
  dicom_all.crdc_instance_uuid AS crdc_instance_uuid
FROM
  dicom_all AS dicom_all
LEFT JOIN
  slide_embedding
ON
  dicom_all.SOPInstanceUID = slide_embedding.SOPInstanceUID
LEFT JOIN
  slide_fixative
ON
  dicom_all.SOPInstanceUID = slide_fixative.SOPInstanceUID
LEFT JOIN
  slide_staining
ON
  dicom_all.SOPInstanceUID = slide_staining.SOPInstanceUID
WHERE
  dicom_all.Modality = 'SM'
ORDER BY
  staining_usingSubstance_CodeMeaning[1],
  TransferSyntaxUID,
  SeriesInstanceUID
