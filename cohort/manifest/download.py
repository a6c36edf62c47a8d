"""Downloading a cohort's series with idc-index's downloader (s5cmd): from a manifest, or from a
selection of collections, patients, studies or series (as ``idc download`` and
``IDCClient.download_from_selection`` take them), with a disk-space check before anything starts."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CohortError, DiskSpaceError, DownloadError
from .formats import ManifestFormat, Provider
from .read import manifest_provider, read_manifest
from .write import write_manifest

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..cohort import Cohort

#: idc-index's default layout (``IDCClient.DOWNLOAD_HIERARCHY_DEFAULT``); ``None`` puts every file in DEST.
DEFAULT_DIR_TEMPLATE = "%collection_id/%PatientID/%StudyInstanceUID/%Modality_%SeriesInstanceUID"

#: A selection's option -> the index column it filters (``IDCClient.download_from_selection``'s arguments).
SELECTION_COLUMNS = {"collection": "collection_id", "patient": "PatientID", "study": "StudyInstanceUID",
                     "series": "SeriesInstanceUID"}


@dataclass(frozen=True)
class DownloadPlan:
    """What ``cohort download`` would fetch, and where; idc-index's s5cmd downloader does the work."""

    manifest: Path | None
    dest: Path
    provider: Provider | None
    series: int
    size_MB: float
    cohort: Cohort = field(repr=False, compare=False)
    is_s5cmd: bool = False
    dir_template: str | None = DEFAULT_DIR_TEMPLATE

    def __str__(self) -> str:
        where = {None: "AWS or GCS", Provider.AWS: "AWS", Provider.GCS: "GCS"}[self.provider]
        return (f"{self.series:,} series, {self.size_MB / 1000:,.2f} GB from {where} "
                f"into {self.dest.resolve()}")

    @property
    def needed_bytes(self) -> int:
        """Bytes the series take (idc-index's MB are 10^6 bytes)."""
        return int(round(self.size_MB * 1_000_000))

    def free_bytes(self) -> int:
        """Free bytes on the file system of DEST (or of its nearest existing parent, if DEST is not made yet)."""
        where = self.dest.resolve()
        while not where.exists() and where != where.parent:
            where = where.parent
        return shutil.disk_usage(where).free

    def check_disk_space(self) -> int:
        """Raise :class:`DiskSpaceError` if DEST has less free space than the download needs; return the free bytes."""
        free = self.free_bytes()
        if free < self.needed_bytes:
            raise DiskSpaceError(
                f"not enough free space in {self.dest.resolve()}: the {self.series:,} series need "
                f"{self.needed_bytes:,} bytes ({_gb(self.needed_bytes)}) but only {free:,} bytes ({_gb(free)}) "
                f"are free; free {self.needed_bytes - free:,} bytes there, choose another --dest, or download "
                "fewer series (a narrower selection or manifest)",
                needed_bytes=self.needed_bytes, free_bytes=free, dest=str(self.dest))
        return free

    @contextlib.contextmanager
    def s5cmd_manifest(self) -> Iterator[Path]:
        """The s5cmd manifest to hand to idc-index: the file itself, or a temporary export of the cohort."""
        if self.is_s5cmd and self.manifest is not None:
            yield self.manifest
            return
        with tempfile.TemporaryDirectory(prefix="idc-cohort-") as tmp:
            target = Path(tmp) / f"{self.manifest.stem if self.manifest else 'selection'}.s5cmd"
            write_manifest(self.cohort, target, ManifestFormat.S5CMD, self.provider or Provider.AWS, citations=False)
            yield target


def _gb(n: int) -> str:
    return f"{n / 1e9:,.2f} GB"


def _size_MB(cohort: Cohort) -> float:
    return round(sum(v or 0 for v in cohort.result.column("series_size_MB").to_pylist()), 2)  # as idc-index sums


def plan_download(manifest: str | Path, dest: str | Path = ".", catalog: Catalog | None = None,
                  dir_template: str | None = DEFAULT_DIR_TEMPLATE) -> DownloadPlan:
    """Read and check a manifest, and size its download from the catalog (no download, no network)."""
    manifest = Path(manifest)
    cohort = read_manifest(manifest, catalog)
    return DownloadPlan(manifest, Path(dest), manifest_provider(cohort), len(cohort), _size_MB(cohort), cohort,
                        cohort.provenance.params["format"] == ManifestFormat.S5CMD.value, dir_template)


def _values(value: str | Iterable[str] | None, option: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise DownloadError(f"{option} takes strings (one or a list); got {type(bad[0]).__name__} {bad[0]!r}")
    return list(dict.fromkeys(v.strip() for v in items if v and v.strip()))


def plan_selection(dest: str | Path = ".", *, collection: str | Iterable[str] | None = None,
                   patient: str | Iterable[str] | None = None, study: str | Iterable[str] | None = None,
                   series: str | Iterable[str] | None = None, catalog: Catalog | None = None,
                   provider: Provider | str = Provider.AWS,
                   dir_template: str | None = DEFAULT_DIR_TEMPLATE) -> DownloadPlan:
    """Plan the download of the current series of collections, patients, studies and/or series (no network).

    Several values of one kind are a union; different kinds narrow each other (``collection`` and ``patient``:
    those patients, if in those collections). idc-index's ``download_from_selection`` instead uses only the
    most specific kind given. Every value must be in the index, else :class:`DownloadError` names it.
    """
    from ..cohort import Cohort, default_catalog  # noqa: PLC0415 - cohort.py does not import the manifest code

    catalog = catalog or default_catalog()
    chosen = {kind: _values(v, kind) for kind, v in
              (("collection", collection), ("patient", patient), ("study", study), ("series", series))}
    chosen = {k: v for k, v in chosen.items() if v}
    if not chosen:
        raise DownloadError("nothing selected: give at least one collection, patient, study or series "
                            "(--collection, --patient, --study, --series), or a manifest")
    for kind, values in chosen.items():
        column = SELECTION_COLUMNS[kind]
        present = set(catalog.sql(f"SELECT DISTINCT {column} FROM index WHERE list_contains($v, {column})",
                                             {"v": values}).column(0).to_pylist())
        missing = [v for v in values if v not in present]
        if missing:
            hint = ""
            if kind == "collection":
                hint = " (collection_ids are lower case, e.g. tcga_paad; `cohort collections` lists them)"
            raise DownloadError(f"{len(missing)} {kind} value(s) not in the index of IDC v{catalog.idc_version}: "
                                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; check the "
                                f"--{kind} values{hint}")
    where = " AND ".join(f"list_contains(${kind}, {SELECTION_COLUMNS[kind]})" for kind in chosen)
    sql = ("SELECT SeriesInstanceUID, collection_id, PatientID, StudyInstanceUID, Modality, crdc_series_uuid, "
           f"series_size_MB FROM index WHERE {where} ORDER BY collection_id, PatientID, StudyInstanceUID, "
           "SeriesInstanceUID")
    cohort = Cohort.from_sql(sql, chosen, catalog=catalog)
    if len(cohort) == 0:
        raise DownloadError(f"the selection {_describe(chosen)} has no series: each value exists, but not together "
                            "(e.g. a patient of another collection); drop or correct one of the options")
    return DownloadPlan(None, Path(dest), Provider(provider), len(cohort), _size_MB(cohort), cohort,
                        dir_template=dir_template)


def _describe(chosen: dict[str, list[str]]) -> str:
    return "; ".join(f"{k}={','.join(v[:3])}{'...' if len(v) > 3 else ''}" for k, v in chosen.items())


class _Errors(logging.Handler):
    """Collects idc-index's ERROR records: it logs a failed s5cmd run instead of raising."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def download(plan: DownloadPlan, client: Any = None) -> None:
    """Download a plan with idc-index (``IDCClient.download_from_manifest``, s5cmd) after checking disk space.

    Raises :class:`DiskSpaceError` before anything starts if DEST is too small, and :class:`DownloadError`
    if idc-index raises or reports a failed s5cmd run (the download is then incomplete; rerun to finish it).
    """
    plan.check_disk_space()
    if client is None:
        from idc_index import IDCClient  # noqa: PLC0415 - loads the whole index (~15 s, 3 GB)

        client = IDCClient()
    plan.dest.mkdir(parents=True, exist_ok=True)
    errors = _Errors()
    idc_logger = logging.getLogger("idc_index")
    idc_logger.addHandler(errors)
    try:
        with plan.s5cmd_manifest() as manifest_file:
            client.download_from_manifest(manifestFile=str(manifest_file), downloadDir=str(plan.dest),
                                          dirTemplate=plan.dir_template)
    except (CohortError, KeyboardInterrupt):
        raise
    except Exception as exc:  # idc-index raises ValueError, its own disk-space error, subprocess errors...
        raise DownloadError(
            f"idc-index failed downloading {plan}: {type(exc).__name__}: {exc}; the download is incomplete. Fix the "
            "cause above (network, --dir-template, disk) and run the same download again: files already in "
            f"{plan.dest.resolve()} are fetched again or skipped by s5cmd") from exc
    finally:
        idc_logger.removeHandler(errors)
    if errors.messages:
        raise DownloadError(
            f"idc-index reported a failed download of {plan}: {' | '.join(m.strip() for m in errors.messages)[:1000]}"
            "; the download is incomplete. Check the network and run the same download again")
