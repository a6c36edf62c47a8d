"""Where each idc-index table's Parquet file is, and fetching the optional ones.

idc-index-data ships five tables as Parquet (``index`` and friends) and only
the schema of the others (``sm_index``, ``clinical_index``, ...). An optional
table is looked up, in order, in

1. a user-given directory (argument or ``COHORT_INDEX_DIR``): air-gapped machines;
2. our per-version cache (``platformdirs.user_cache_dir("idc-cohort")/<version>``);
3. idc-index's own per-version directory, when idc-index already fetched it;

and otherwise downloaded from the idc-index-data release (idc-index's URL, then
the mirror), verified (readable Parquet; sha256 where the server has a sidecar)
and moved into the cache atomically, so that a broken download is never cached.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import re
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version as _dist_version
from pathlib import Path

import platformdirs

from ._text import short_error
from .errors import CatalogError, TableUnavailableError, UnknownTableError

#: idc-index's name for a table -> idc-index-data's file stem.
FILE_STEMS = {"index": "idc_index"}
RELEASE_URL = "https://github.com/ImagingDataCommons/idc-index-data/releases/download/{version}/{name}.parquet"
MIRROR_URL = "https://storage.googleapis.com/idc-index-data-artifacts/{version}/release_artifacts/{name}.parquet"
DEFAULT_URLS = (RELEASE_URL, MIRROR_URL)


@dataclass(frozen=True)
class TableInfo:
    """One idc-index table: its name, whether the wheel ships it, and its schema."""

    name: str
    description: str
    bundled: bool
    bundled_path: Path | None
    schema: dict | None

    @property
    def column_names(self) -> list[str]:
        return [c["name"] for c in (self.schema or {}).get("columns", [])]


def data_version() -> str:
    """The installed idc-index-data version, e.g. ``"25.0.5"``."""
    return _dist_version("idc-index-data")


def idc_version() -> int:
    """The IDC release of the installed index (the major of idc-index-data): 25 for 25.0.5."""
    return int(data_version().split(".")[0])


@cache
def known_tables() -> dict[str, TableInfo]:
    """Every table idc-index knows, under idc-index's names (``index``, not ``idc_index``)."""
    stems = {v: k for k, v in FILE_STEMS.items()}
    tables = {}
    for stem, schema, parquet in _package_tables():
        name = stems.get(stem, stem)
        tables[name] = TableInfo(
            name=name,
            description=(schema or {}).get("table_description", ""),
            bundled=parquet is not None,
            bundled_path=parquet,
            schema=schema,
        )
    return tables


def _package_tables() -> list[tuple[str, dict | None, Path | None]]:
    """(file stem, schema, shipped Parquet file or None) of each table in idc-index-data.

    Read from the package's folder without importing it: its import looks every
    file up in the wheel's RECORD, which costs more than making a whole catalog.
    Falls back to the import where the files are elsewhere (editable installs).
    """
    spec = importlib.util.find_spec("idc_index_data")
    folder = Path(spec.origin).parent if spec and spec.origin else None
    if folder is not None and (folder / "idc_index.parquet").is_file():
        found = []
        for schema_file in sorted(folder.glob("*_schema.json")):
            stem = schema_file.name.removesuffix("_schema.json")
            parquet = folder / f"{stem}.parquet"
            schema = json.loads(schema_file.read_text(encoding="utf-8"))
            found.append((stem, schema, parquet if parquet.is_file() else None))
        return found
    import idc_index_data  # noqa: PLC0415

    return [
        (stem, meta.get("schema") or None, Path(meta["parquet_filepath"]) if meta.get("parquet_filepath") else None)
        for stem, meta in idc_index_data.INDEX_METADATA.items()
    ]


def expected_files() -> list[str]:
    """The file names an index directory may hold: one ``<table>.parquet`` per optional table."""
    return [f"{name}.parquet" for name, info in known_tables().items() if not info.bundled]


def cache_dir(version: str | None = None) -> Path:
    return Path(platformdirs.user_cache_dir("idc-cohort")) / (version or data_version())


def idc_index_cache_dir(version: str | None = None) -> Path:
    """idc-index's own directory of fetched tables (``IDCClient.indices_data_dir``)."""
    return Path(platformdirs.user_data_dir("idc_index_data", "IDC", version=version or data_version()))


class TableStore:
    """Finds, and where needed downloads, the Parquet file of each table."""

    def __init__(
        self,
        index_dir: str | os.PathLike | None = None,
        cache: str | os.PathLike | None = None,
        urls: tuple[str, ...] = DEFAULT_URLS,
        download: bool = True,
        timeout: float = 60,
    ) -> None:
        env_dir = os.environ.get("COHORT_INDEX_DIR")
        self.index_dir = Path(index_dir) if index_dir else (Path(env_dir) if env_dir else None)
        if self.index_dir is not None and not self.index_dir.is_dir():
            given = "index_dir (--index-dir)" if index_dir else "COHORT_INDEX_DIR"
            what = "is not a directory" if self.index_dir.exists() else "does not exist"
            raise CatalogError(
                f"index directory {self.index_dir} (from {given}) {what}; give the directory that holds the "
                f"optional tables' Parquet files ({', '.join(expected_files()[:3])}, ...), or leave it unset "
                "to use the cache and downloads"
            )
        self.cache = Path(cache) if cache else cache_dir()
        self.urls = tuple(urls)
        self.download = download
        self.timeout = timeout
        self.version = data_version()
        self.tables = dict(known_tables())

    def info(self, name: str) -> TableInfo:
        try:
            return self.tables[name]
        except KeyError:
            raise UnknownTableError(self.unknown_table_message(name)) from None

    def unknown_table_message(self, name: str) -> str:
        here = sorted(n for n in self.tables if self.local_path(n))
        fetch = sorted(n for n in self.tables if not self.local_path(n))
        close = difflib.get_close_matches(name.lower(), list(self.tables), n=1)
        return (
            f"unknown table {name!r}"
            + (f" (did you mean {close[0]}?)" if close else "")
            + f". Available now: {', '.join(here)}"
            + (f"; fetched on first use: {', '.join(fetch)}" if fetch else "")
        )

    def candidates(self, name: str) -> list[Path]:
        """Every place the table's file may be, in the order they are tried."""
        info = self.info(name)
        if info.bundled and info.bundled_path:
            return [info.bundled_path]
        places = [self.cache / f"{name}.parquet", idc_index_cache_dir(self.version) / f"{name}.parquet"]
        if self.index_dir:
            places.insert(0, self.index_dir / f"{name}.parquet")
        return places

    def local_path(self, name: str) -> Path | None:
        """The table's file if it is on this machine (shipped, given or cached), else None."""
        return next((p for p in self.candidates(name) if p.is_file()), None)

    def path(self, name: str) -> Path:
        """The table's file, downloading an optional table on first use."""
        local = self.local_path(name)
        if local:
            return local
        return self.fetch(name)

    def release_urls(self, name: str) -> list[str]:
        return [u.format(version=self.version, name=name) for u in self.urls]

    def fetch(self, name: str) -> Path:
        """Download an optional table into the cache; the first URL that yields a valid file wins."""
        urls = self.release_urls(name)
        if self.index_dir is not None:
            held = sorted(p.name for p in self.index_dir.glob("*.parquet"))
            shown = ", ".join(held[:8]) + (f" and {len(held) - 8} more" if len(held) > 8 else "")
            what = (f"table {name!r} is not in the index directory {self.index_dir} (looked for "
                    f"{self.index_dir / f'{name}.parquet'}; the directory holds {shown or 'no .parquet files'})")
            how_to = (f"put {name}.parquet of idc-index-data {self.version} into {self.index_dir} (one file per "
                      f"table, named as the table: {', '.join(expected_files()[:3])}, ...)")
        else:
            what = f"table {name!r} is not on this machine"
            how_to = (
                f"to work offline, put {name}.parquet (idc-index-data {self.version}) in a directory and pass it "
                f"as index_dir= (--index-dir) or set COHORT_INDEX_DIR; or copy it into {self.cache}"
            )
        if not self.download:
            raise TableUnavailableError(
                f"{what}, nor cached, and downloads are off (it is published at {' and '.join(urls)}); {how_to}"
            )
        import requests  # noqa: PLC0415 - only to download; keeps `import cohort` and queries light

        failures = []
        for url in urls:
            try:
                return self._download(name, url)
            except (requests.RequestException, OSError, ValueError) as exc:
                failures.append(f"{url}: {short_error(exc)}")
        raise TableUnavailableError(f"{what} and could not be fetched (tried {'; '.join(failures)}); {how_to}")

    def _download(self, name: str, url: str) -> Path:
        """Fetch one URL into a temporary file; only a complete, verified file is renamed into the cache."""
        import pyarrow.parquet as pq  # noqa: PLC0415 - keeps `import cohort` free of pyarrow
        import requests  # noqa: PLC0415

        self.cache.mkdir(parents=True, exist_ok=True)
        target = self.cache / f"{name}.parquet"
        expected = self._sidecar_sha256(url)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=self.cache)
        try:
            # urllib3 raises when the body is shorter than Content-Length (a cut connection).
            with os.fdopen(fd, "wb") as out, requests.get(url, stream=True, timeout=self.timeout) as r:
                r.raise_for_status()
                for chunk in r.iter_content(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
            if expected and digest.hexdigest() != expected:
                raise ValueError(f"sha256 mismatch: got {digest.hexdigest()}, the .sha256 sidecar says {expected}")
            try:
                pq.read_metadata(tmp)
            except Exception as exc:  # pyarrow raises several types for a broken file
                raise ValueError(f"not a readable Parquet file ({short_error(exc)})") from None
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target

    def _sidecar_sha256(self, url: str) -> str | None:
        """The sha256 in ``<url>.sha256`` when the server has one (the mirror does)."""
        import requests  # noqa: PLC0415
        try:
            r = requests.get(url + ".sha256", timeout=self.timeout)
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        words = r.text.split()
        return words[0].lower() if words and re.fullmatch(r"[0-9a-fA-F]{64}", words[0]) else None

