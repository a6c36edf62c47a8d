-- Port of idc-index-data's sm_index.sql (BigQuery) to DuckDB over the archive's dicom_all view
-- (dicom_metadata plus the columns only IDC knows, as NULL, and the user's collection_id).
-- Line for line with the original; the dialect changes are:
--   x[SAFE_OFFSET(0)]                  -> x[1]          (DuckDB lists are 1-based; out of range is NULL)
--   SAFE_CAST(x AS FLOAT64 / INT)      -> TRY_CAST(x AS DOUBLE / BIGINT)
--   CONCAT(a, ":", b)                  -> a || ':' || b (NULL if any part is NULL, as BigQuery's CONCAT)
--   ARRAY_AGG(DISTINCT(e) IGNORE NULLS ORDER BY e) -> list(DISTINCT e ORDER BY e) FILTER (WHERE e IS NOT NULL)
--   ARRAY(SELECT f(code) FROM UNNEST(a) AS code) -> list_transform(coalesce(a, []), code -> f(code))
--   SPLIT(s, ':')                      -> string_split(s, ':')
--   the chain of UNNESTs in FROM -> unnest of nested list_transforms (see SpecimenPreparationSequence_unnested)
WITH
  temp_table AS (
  SELECT
    dicom_all.SeriesInstanceUID,
    ANY_VALUE(ContainerIdentifier) AS ContainerIdentifier,
    ANY_VALUE(Modality) AS Modality,
    ANY_VALUE(collection_id) AS collection_id,
    ANY_VALUE(OpticalPathSequence[1].ObjectiveLensPower) AS ObjectiveLensPower,
    MAX(DISTINCT(TotalPixelMatrixColumns)) AS max_TotalPixelMatrixColumns,
    MAX(DISTINCT(TotalPixelMatrixRows)) AS max_TotalPixelMatrixRows,
    MAX(DISTINCT("Columns")) AS max_Columns,
    MAX(DISTINCT("Rows")) AS max_Rows,
    MIN(DISTINCT(TRY_CAST(PixelSpacing[1] AS DOUBLE))) AS min_spacing_0,
    MIN(TRY_CAST(SharedFunctionalGroupsSequence[1].PixelMeasuresSequence[1].PixelSpacing[1] AS DOUBLE)) AS fg_min_spacing_0,
    (list(DISTINCT (SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodingSchemeDesignator || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodeValue || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodeMeaning) ORDER BY (SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodingSchemeDesignator || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodeValue || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodeMeaning)) FILTER (WHERE (SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodingSchemeDesignator || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodeValue || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].CodeMeaning) IS NOT NULL))[1] AS primaryAnatomicStructure_code_str,
    (list(DISTINCT (SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].PrimaryAnatomicStructureModifierSequence[1].CodingSchemeDesignator || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].PrimaryAnatomicStructureModifierSequence[1].CodeValue || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].PrimaryAnatomicStructureModifierSequence[1].CodeMeaning) ORDER BY (SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].PrimaryAnatomicStructureModifierSequence[1].CodingSchemeDesignator || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].PrimaryAnatomicStructureModifierSequence[1].CodeValue || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].PrimaryAnatomicStructureModifierSequence[1].CodeMeaning)) FILTER (WHERE (SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].PrimaryAnatomicStructureModifierSequence[1].CodingSchemeDesignator || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].PrimaryAnatomicStructureModifierSequence[1].CodeValue || ':' || SpecimenDescriptionSequence[1].PrimaryAnatomicStructureSequence[1].PrimaryAnatomicStructureModifierSequence[1].CodeMeaning) IS NOT NULL))[1] AS primaryAnatomicStructureModifier_code_str,

    (list(DISTINCT (OpticalPathSequence[1].IlluminationTypeCodeSequence[1].CodingSchemeDesignator || ':' || OpticalPathSequence[1].IlluminationTypeCodeSequence[1].CodeValue || ':' || OpticalPathSequence[1].IlluminationTypeCodeSequence[1].CodeMeaning) ORDER BY (OpticalPathSequence[1].IlluminationTypeCodeSequence[1].CodingSchemeDesignator || ':' || OpticalPathSequence[1].IlluminationTypeCodeSequence[1].CodeValue || ':' || OpticalPathSequence[1].IlluminationTypeCodeSequence[1].CodeMeaning)) FILTER (WHERE (OpticalPathSequence[1].IlluminationTypeCodeSequence[1].CodingSchemeDesignator || ':' || OpticalPathSequence[1].IlluminationTypeCodeSequence[1].CodeValue || ':' || OpticalPathSequence[1].IlluminationTypeCodeSequence[1].CodeMeaning) IS NOT NULL))[1] AS illuminationType_code_str,

    (list(DISTINCT (AdmittingDiagnosesCodeSequence[1].CodingSchemeDesignator || ':' || AdmittingDiagnosesCodeSequence[1].CodeValue || ':' || AdmittingDiagnosesCodeSequence[1].CodeMeaning) ORDER BY (AdmittingDiagnosesCodeSequence[1].CodingSchemeDesignator || ':' || AdmittingDiagnosesCodeSequence[1].CodeValue || ':' || AdmittingDiagnosesCodeSequence[1].CodeMeaning)) FILTER (WHERE (AdmittingDiagnosesCodeSequence[1].CodingSchemeDesignator || ':' || AdmittingDiagnosesCodeSequence[1].CodeValue || ':' || AdmittingDiagnosesCodeSequence[1].CodeMeaning) IS NOT NULL))[1] AS admittingDiagnosis_code_str


  FROM
    dicom_all AS dicom_all
  GROUP BY
    SeriesInstanceUID
  ),

SpecimenPreparationSequence_unnested AS (
      -- BigQuery: FROM dicom_all, UNNEST(SpecimenDescriptionSequence[SAFE_OFFSET(0)].SpecimenPreparationSequence) AS
      -- preparation_unnest_step1, UNNEST(....SpecimenPreparationStepContentItemSequence) AS preparation_unnest_step2,
      -- UNNEST(....ConceptNameCodeSequence) AS concept_name_code_sequence, UNNEST(....ConceptCodeSequence) AS
      -- concept_code_sequence. The same cross product, as nested list_transform + flatten + unnest: DuckDB runs
      -- a chain of lateral UNNEST joins 30x slower (it joins on the whole outer row).
      SELECT
        SeriesInstanceUID,
        p.concept_name_code_sequence.CodeMeaning AS cnc_cm,
        p.concept_name_code_sequence.CodingSchemeDesignator AS cnc_csd,
        p.concept_name_code_sequence.CodeValue AS cnc_val,
        p.concept_code_sequence.CodeMeaning AS ccs_cm,
        p.concept_code_sequence.CodingSchemeDesignator AS ccs_csd,
        p.concept_code_sequence.CodeValue AS ccs_val,
      FROM (
        SELECT SeriesInstanceUID, unnest(flatten(flatten(flatten(
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
      SeriesInstanceUID,
      list(DISTINCT (ccs_cm || ':' || ccs_csd || ':' || ccs_val) ORDER BY (ccs_cm || ':' || ccs_csd || ':' || ccs_val)) as embeddingMedium_code_str
    FROM SpecimenPreparationSequence_unnested
    WHERE (cnc_csd = 'SCT' and cnc_val = '430863003') -- CodeMeaning is 'Embedding medium'
    GROUP BY SeriesInstanceUID
    ),

    slide_fixative AS (
    SELECT
      SeriesInstanceUID,
      list(DISTINCT (ccs_cm || ':' || ccs_csd || ':' || ccs_val) ORDER BY (ccs_cm || ':' || ccs_csd || ':' || ccs_val)) as tissueFixative_code_str
    FROM SpecimenPreparationSequence_unnested
    WHERE (cnc_csd = 'SCT' and cnc_val = '430864009') -- CodeMeaning is 'Tissue Fixative'
    GROUP BY SeriesInstanceUID
    ),

    slide_staining AS (
    SELECT
      SeriesInstanceUID,
      list(DISTINCT (ccs_cm || ':' || ccs_csd || ':' || ccs_val) ORDER BY (ccs_cm || ':' || ccs_csd || ':' || ccs_val)) as staining_usingSubstance_code_str,
    FROM SpecimenPreparationSequence_unnested
    WHERE (cnc_csd = 'SCT' and cnc_val = '424361007') -- CodeMeaning is 'Using substance'
    GROUP BY SeriesInstanceUID
    )

SELECT
  temp_table.SeriesInstanceUID,
  ContainerIdentifier,
  -- Embedding Medium
  list_transform(coalesce(embeddingMedium_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE string_split(code, ':')[1] END
  ) AS embeddingMedium_CodeMeaning,
  list_transform(coalesce(embeddingMedium_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE
              CASE WHEN strpos(code, ':') = 0 THEN NULL ELSE
                 substr(code, strpos(code, ':') + 1) END END
  ) AS embeddingMedium_code_designator_value_str,
  -- Tissue Fixative
  list_transform(coalesce(tissueFixative_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE string_split(code, ':')[1] END
  ) AS tissueFixative_CodeMeaning,
  list_transform(coalesce(tissueFixative_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE
              CASE WHEN strpos(code, ':') = 0 THEN NULL ELSE
                 substr(code, strpos(code, ':') + 1) END END
  ) AS tissueFixative_code_designator_value_str,
  -- Staining using substance
  list_transform(coalesce(staining_usingSubstance_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE string_split(code, ':')[1] END
  ) AS staining_usingSubstance_CodeMeaning,
  list_transform(coalesce(staining_usingSubstance_code_str, []),
    code -> CASE WHEN code IS NULL THEN NULL ELSE
              CASE WHEN strpos(code, ':') = 0 THEN NULL ELSE
                 substr(code, strpos(code, ':') + 1) END END
  ) AS staining_usingSubstance_code_designator_value_str,
  if(COALESCE(min_spacing_0, fg_min_spacing_0) = 0, 0,
    round(COALESCE(min_spacing_0, fg_min_spacing_0), CAST(2 -1-floor(log10(abs(COALESCE(min_spacing_0, fg_min_spacing_0)))) AS INTEGER))) AS min_PixelSpacing_2sf,
  COALESCE(max_TotalPixelMatrixColumns, max_Columns) AS max_TotalPixelMatrixColumns,
  COALESCE(max_TotalPixelMatrixRows, max_Rows) AS max_TotalPixelMatrixRows,
  TRY_CAST(ObjectiveLensPower as BIGINT) as ObjectiveLensPower,
  string_split(primaryAnatomicStructure_code_str, ':')[1] || ':' || string_split(primaryAnatomicStructure_code_str, ':')[2] as primaryAnatomicStructure_code_designator_value_str,
  string_split(primaryAnatomicStructure_code_str, ':')[3] as primaryAnatomicStructure_CodeMeaning,
  string_split(primaryAnatomicStructureModifier_code_str, ':')[1] || ':' || string_split(primaryAnatomicStructureModifier_code_str, ':')[2] as primaryAnatomicStructureModifier_code_designator_value_str,
  string_split(primaryAnatomicStructureModifier_code_str, ':')[3] as primaryAnatomicStructureModifier_CodeMeaning,
  string_split(illuminationType_code_str, ':')[1] || ':' || string_split(illuminationType_code_str, ':')[2] as illuminationType_code_designator_value_str,
  string_split(illuminationType_code_str, ':')[3] as illuminationType_CodeMeaning,
  string_split(admittingDiagnosis_code_str, ':')[1] || ':' || string_split(admittingDiagnosis_code_str, ':')[2] as admittingDiagnosis_code_designator_value_str,
  string_split(admittingDiagnosis_code_str, ':')[3] as admittingDiagnosis_CodeMeaning,
FROM
  temp_table
LEFT JOIN slide_embedding on temp_table.SeriesInstanceUID = slide_embedding.SeriesInstanceUID
LEFT JOIN slide_fixative on temp_table.SeriesInstanceUID = slide_fixative.SeriesInstanceUID
LEFT JOIN slide_staining on temp_table.SeriesInstanceUID = slide_staining.SeriesInstanceUID
WHERE
  Modality = 'SM'
ORDER BY
  primaryAnatomicStructure_CodeMeaning,
  staining_usingSubstance_CodeMeaning[1],
  collection_id
