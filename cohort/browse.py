"""Browsing the index as idc-index users do: collections, patients, studies, series, viewer URLs.

Each function matches an ``IDCClient`` method of idc-index (named in its
docstring) and answers with one DuckDB query over the catalog, with counts and
sizes added: series, studies, instances and GB at every level.

    >>> from cohort.browse import patients, viewer_url
    >>> patients("tcga_paad").head(2)
    >>> viewer_url(series_uid="1.3.6.1.4.1.5962.99.1.3380245274.1362068963.1639762817818.2.0")
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import CohortInputError

if TYPE_CHECKING:
    import pandas as pd

    from .catalog import Catalog

VIEWER = "https://viewer.imaging.datacommons.cancer.gov"


class Viewer(str, enum.Enum):
    """The IDC viewers (idc-index's ``viewer_selector``)."""

    SLIM = "slim"
    OHIF_V3 = "ohif_v3"
    OHIF_V2 = "ohif_v2"


def _catalog(catalog: Catalog | None) -> Catalog:
    from .cohort import default_catalog  # noqa: PLC0415

    return catalog or default_catalog()


def _as_list(value: str | Iterable[str], what: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    bad = [v for v in items if not isinstance(v, str) or not v.strip()]
    if not items or bad:
        raise CohortInputError(f"{what}: give one or more non-empty strings, got {value!r}")
    return [v.strip() for v in items]


def _check_known(catalog: Catalog, column: str, values: list[str], hint: str) -> None:
    """Every value must be in ``index.<column>``; otherwise say which, with the nearest values."""
    from .diagnose import Comparison, _nearest  # noqa: PLC0415

    found = set(catalog.sql(f'SELECT DISTINCT "{column}" AS v FROM index WHERE list_contains($v, "{column}")',
                            {"v": values}).column("v").to_pylist())
    missing = [v for v in values if v not in found]
    if not missing:
        return
    parts = []
    for value in missing[:5]:
        near = _nearest(catalog, Comparison("v", "index", column, False), value) if not _is_uid(value) else []
        parts.append(repr(value) + (f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""))
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise CohortInputError(f"not in index.{column} of IDC v{catalog.idc_version}: {', '.join(parts)}{more}; {hint}")


def _is_uid(value: str) -> bool:
    return value.replace(".", "").isdigit()


def collections(catalog: Catalog | None = None) -> pd.DataFrame:
    """One row per collection: patients, studies, series, instances, GB, modalities, licences.

    idc-index: ``IDCClient.get_collections()`` (which lists the names only). The saved
    query ``collection_summary`` gives the same table.
    """
    from .queries import load_query  # noqa: PLC0415

    catalog = _catalog(catalog)
    saved = load_query("collection_summary")
    return catalog.df(saved.sql, saved.bind({}), source=saved.source)


def patients(collection_id: str | Iterable[str], catalog: Catalog | None = None) -> pd.DataFrame:
    """The patients of one or more collections, with sex, age, studies, series, instances and GB.

    idc-index: ``IDCClient.get_patients(collection_id, outputFormat="df")``.
    """
    catalog = _catalog(catalog)
    ids = _as_list(collection_id, "collection_id")
    _check_known(catalog, "collection_id", ids, "see `cohort collections` for the ids (lower case, e.g. tcga_paad)")
    return catalog.df(
        """SELECT PatientID, string_agg(DISTINCT PatientSex) AS PatientSex, string_agg(DISTINCT PatientAge) AS PatientAge,
                  collection_id, count(DISTINCT StudyInstanceUID) AS studies, count(*) AS series,
                  sum(instanceCount)::BIGINT AS instances, round(sum(series_size_MB) / 1000, 3) AS size_GB
           FROM index WHERE list_contains($ids, collection_id)
           GROUP BY PatientID, collection_id ORDER BY collection_id, PatientID""",
        {"ids": ids},
    )


def studies(patient_id: str | Iterable[str], catalog: Catalog | None = None) -> pd.DataFrame:
    """The studies of one or more patients, with date, description, modalities, series, instances and GB.

    idc-index: ``IDCClient.get_dicom_studies(patientId, outputFormat="df")`` (its ``SeriesCount`` is ``series``).
    """
    catalog = _catalog(catalog)
    ids = _as_list(patient_id, "PatientID")
    _check_known(catalog, "PatientID", ids, "see `cohort patients COLLECTION_ID` for the PatientIDs")
    return catalog.df(
        """SELECT StudyInstanceUID, string_agg(DISTINCT StudyDate) AS StudyDate,
                  string_agg(DISTINCT StudyDescription) AS StudyDescription, PatientID, collection_id,
                  string_agg(DISTINCT Modality, ',' ORDER BY Modality) AS modalities, count(*) AS series,
                  sum(instanceCount)::BIGINT AS instances, round(sum(series_size_MB) / 1000, 3) AS size_GB
           FROM index WHERE list_contains($ids, PatientID)
           GROUP BY StudyInstanceUID, PatientID, collection_id ORDER BY PatientID, StudyDate, StudyInstanceUID""",
        {"ids": ids},
    )


def series(study_uid: str | Iterable[str], catalog: Catalog | None = None) -> pd.DataFrame:
    """The series of one or more studies, with idc-index's columns, instances and MB.

    idc-index: ``IDCClient.get_dicom_series(studyInstanceUID, outputFormat="df")`` (its ``Collection``
    is ``collection_id`` and ``instance_count`` is ``instanceCount`` here, as in the index).
    """
    catalog = _catalog(catalog)
    ids = _as_list(study_uid, "StudyInstanceUID")
    _check_known(catalog, "StudyInstanceUID", ids,
                 "see `cohort studies PATIENT_ID` for the StudyInstanceUIDs (a SeriesInstanceUID is not a study)")
    return catalog.df(
        """SELECT StudyInstanceUID, SeriesInstanceUID, Modality, SeriesDate, collection_id, BodyPartExamined,
                  SeriesDescription, Manufacturer, ManufacturerModelName, SeriesNumber, instanceCount, series_size_MB
           FROM index WHERE list_contains($ids, StudyInstanceUID)
           ORDER BY StudyInstanceUID, Modality, SeriesDate, SeriesDescription, BodyPartExamined, SeriesNumber""",
        {"ids": ids},
    )


def viewer_url(
    series_uid: str | None = None,
    study_uid: str | None = None,
    viewer: Viewer | str | None = None,
    catalog: Catalog | None = None,
) -> str:
    """The IDC viewer URL of a series or a study: Slim when the study has SM images, else OHIF v3.

    idc-index: ``IDCClient.get_viewer_URL(seriesInstanceUID, studyInstanceUID, viewer_selector)``,
    with the same URLs. The UIDs must be in the current release (the viewer shows it).
    """
    if series_uid is None and study_uid is None:
        raise CohortInputError("viewer_url needs a SeriesInstanceUID or a StudyInstanceUID (or both)")
    try:
        chosen = Viewer(viewer.value if isinstance(viewer, Viewer) else viewer.lower()) if viewer else None
    except ValueError:
        raise CohortInputError(f"unknown viewer {viewer!r}; use one of {', '.join(v.value for v in Viewer)}") from None
    catalog = _catalog(catalog)
    if series_uid is not None:
        rows = catalog.sql("SELECT StudyInstanceUID FROM index WHERE SeriesInstanceUID = $s",
                           {"s": series_uid}).column(0).to_pylist()
        if not rows:
            raise CohortInputError(_not_current(catalog, "SeriesInstanceUID", series_uid))
        if study_uid is not None and study_uid != rows[0]:
            raise CohortInputError(f"series {series_uid} belongs to study {rows[0]}, not {study_uid}")
        study_uid = rows[0]
    modalities = catalog.sql("SELECT DISTINCT Modality FROM index WHERE StudyInstanceUID = $s",
                             {"s": study_uid}).column(0).to_pylist()
    if not modalities:
        raise CohortInputError(_not_current(catalog, "StudyInstanceUID", study_uid))
    chosen = chosen or (Viewer.SLIM if "SM" in modalities else Viewer.OHIF_V3)
    return _url(chosen, study_uid, series_uid)


def _url(viewer: Viewer, study: Any, series_uid: str | None) -> str:
    if viewer is Viewer.SLIM:
        return f"{VIEWER}/slim/studies/{study}" + (f"/series/{series_uid}" if series_uid else "")
    if viewer is Viewer.OHIF_V2:
        return f"{VIEWER}/viewer/{study}" + (f"?SeriesInstanceUID={series_uid}" if series_uid else "")
    return f"{VIEWER}/v3/viewer/?StudyInstanceUIDs={study}" + (
        f"&initialSeriesInstanceUID={series_uid}" if series_uid else "")


def _not_current(catalog: Catalog, column: str, uid: str) -> str:
    other = {"SeriesInstanceUID": "StudyInstanceUID", "StudyInstanceUID": "SeriesInstanceUID"}[column]
    if catalog.sql(f'SELECT 1 FROM index WHERE "{other}" = $u LIMIT 1', {"u": uid}).num_rows:
        return f"{uid} is a {other}, not a {column}; pass it as such"
    if column == "SeriesInstanceUID" and catalog.sql(
            "SELECT 1 FROM prior_versions_index WHERE SeriesInstanceUID = $u LIMIT 1", {"u": uid}).num_rows:
        return (f"series {uid} is only in earlier releases (prior_versions_index), and the IDC viewer shows "
                f"the current release v{catalog.idc_version}")
    return f"{column} {uid} is not in IDC v{catalog.idc_version}; check for a typo"
