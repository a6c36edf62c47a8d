"""Downloading a manifest's series with idc-index's downloader (s5cmd)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .formats import ManifestFormat, Provider
from .read import manifest_provider, read_manifest
from .write import write_manifest

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..cohort import Cohort


@dataclass(frozen=True)
class DownloadPlan:
    """What ``cohort download`` would fetch, and where; idc-index's s5cmd downloader does the work."""

    manifest: Path
    dest: Path
    provider: Provider | None
    series: int
    size_MB: float
    cohort: Cohort = field(repr=False, compare=False)
    is_s5cmd: bool = False

    def __str__(self) -> str:
        where = {None: "AWS or GCS", Provider.AWS: "AWS", Provider.GCS: "GCS"}[self.provider]
        return (f"{self.series:,} series, {self.size_MB / 1000:,.2f} GB from {where} "
                f"into {self.dest.resolve()}")

    @contextlib.contextmanager
    def s5cmd_manifest(self) -> Iterator[Path]:
        """The s5cmd manifest to hand to idc-index: the file itself, or a temporary export of it."""
        if self.is_s5cmd:
            yield self.manifest
            return
        with tempfile.TemporaryDirectory(prefix="idc-cohort-") as tmp:
            target = Path(tmp) / f"{self.manifest.stem}.s5cmd"
            write_manifest(self.cohort, target, ManifestFormat.S5CMD, self.provider or Provider.AWS, citations=False)
            yield target


def plan_download(manifest: str | Path, dest: str | Path = ".", catalog: Catalog | None = None) -> DownloadPlan:
    """Read and check a manifest, and size its download from the catalog (no download, no network)."""
    manifest = Path(manifest)
    cohort = read_manifest(manifest, catalog)
    size = round(sum(v or 0 for v in cohort.result.column("series_size_MB").to_pylist()), 2)  # as idc-index sums
    return DownloadPlan(manifest, Path(dest), manifest_provider(cohort), len(cohort), size, cohort,
                        cohort.provenance.params["format"] == ManifestFormat.S5CMD.value)


def download(plan: DownloadPlan, client: Any = None) -> None:
    """Download a planned manifest with idc-index (``IDCClient.download_from_manifest``, s5cmd)."""
    if client is None:
        from idc_index import IDCClient  # noqa: PLC0415 - loads the whole index (~15 s, 3 GB)

        client = IDCClient()
    plan.dest.mkdir(parents=True, exist_ok=True)
    with plan.s5cmd_manifest() as manifest_file:
        client.download_from_manifest(manifestFile=str(manifest_file), downloadDir=str(plan.dest))
