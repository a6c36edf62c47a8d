"""Where a harvest store lives: a local directory, or a prefix in an object store (fsspec).

:func:`location` turns what the user gave (``out/``, ``s3://bucket/prefix``,
``gs://bucket/prefix``, any other fsspec URL) into a :class:`Files`: the few
operations :mod:`.store` needs, each with the guarantee its backend can give.

- :class:`LocalFiles`: a directory. A part is written to a temporary name,
  fsync'ed and renamed into place (see ``HarvestStore._write_atomic``), and
  the directory is fsync'ed before the commit record that lists it is written.
- :class:`ObjectFiles`: an object store. There is no rename, and none is
  needed: a PUT is all-or-nothing (an object is either absent or whole), so
  each part is written once, directly under its final, unique name, and the
  commit record is written last. S3 and GCS list and read their objects
  strongly consistently after a PUT, which is what the commit protocol needs.

Credentials are never taken from a URL or the command line: each ecosystem
finds its own (AWS: environment variables, ``~/.aws`` profiles, instance
roles, through botocore; Google: application default credentials, through
google-auth). A URL with a user or password in it is refused, and the text of
every backend error is passed through :func:`redact` before it is shown.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import io
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from ..errors import HarvestError

#: Environment variables whose values must never show in a message (credentials of the object stores).
SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON", "GCS_OAUTH_TOKEN", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(where: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (an fsspec URL), False for a local path (``file://`` counts as local)."""
    m = _SCHEME.match(os.fspath(where)) if isinstance(where, (str, os.PathLike)) else None
    return bool(m) and m.group(1).lower() not in ("file", "local")


def redact(text: str) -> str:
    """``text`` with the value of every credential variable set in the environment replaced by ``***``."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return re.sub(r"(?i)(x-amz-security-token|signature|access_token|sig)=[^&\s]+", r"\1=***", text)


def describe(exc: BaseException) -> str:
    """A backend exception as one short line for a message, with credentials redacted."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


@dataclass(frozen=True)
class Stat:
    """A file's size and what tells whether it changed (local: mtime and inode; objects: ETag or generation)."""

    size: int
    identity: tuple


class Files:
    """The operations a harvest store needs on its location; paths are relative (``instances/part-...``)."""

    local: bool = False
    #: True when :meth:`create` is atomic (the store refuses a second writer with certainty).
    atomic_create: bool = False
    url: str

    def path(self, rel: str = "") -> Any:
        """What readers open: a :class:`~pathlib.Path` locally, a URL in an object store."""
        raise NotImplementedError

    def list(self, sub: str) -> dict[str, Stat | None]:
        """The entries directly in ``sub``: name -> Stat of a file, None for a directory ({} when missing)."""
        raise NotImplementedError

    def stat(self, rel: str) -> Stat:
        """Raises FileNotFoundError when missing."""
        raise NotImplementedError

    def get(self, rel: str) -> bytes:
        raise NotImplementedError

    def open(self, rel: str) -> io.BufferedIOBase:
        raise NotImplementedError

    def put(self, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def create(self, rel: str, data: bytes) -> bool:
        """Write ``rel`` only if it does not exist; False if it did."""
        raise NotImplementedError

    def replace_if(self, rel: str, data: bytes, identity: tuple, content: bytes) -> bool:
        """Overwrite ``rel`` only if it is still the version ``identity`` (its Stat) names, which holds
        ``content``; False if it changed."""
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        """Delete ``rel`` (nothing when it is missing)."""
        raise NotImplementedError

    def move(self, rel: str, dest: str) -> Any:
        raise NotImplementedError

    def arrow(self) -> tuple[Any, Any]:
        """(pyarrow filesystem or None, function rel -> path for it), for ``pyarrow.dataset``."""
        raise NotImplementedError


class LocalFiles(Files):
    """A local directory (writes are made durable by the store: temp file, fsync, rename)."""

    local = True
    atomic_create = True

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, rel: str = "") -> Path:
        return self.root / rel if rel else self.root

    def list(self, sub: str) -> dict[str, Stat | None]:
        try:
            entries = sorted(self.path(sub).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out: dict[str, Stat | None] = {}
        for p in entries:
            try:
                out[p.name] = self._stat(p) if p.is_file() else None
            except FileNotFoundError:  # a writer's temp file renamed meanwhile (readers take no lock)
                continue
        return out

    @staticmethod
    def _stat(path: Path) -> Stat:
        st = path.stat()
        return Stat(st.st_size, (st.st_size, st.st_mtime_ns, st.st_ino))

    def stat(self, rel: str) -> Stat:
        return self._stat(self.path(rel))

    def get(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def open(self, rel: str) -> io.BufferedIOBase:
        return open(self.path(rel), "rb")  # noqa: SIM115 - the caller closes it

    def delete(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)

    def move(self, rel: str, dest: str) -> Path:
        target = self.path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path(rel), target)
        return target

    def arrow(self) -> tuple[Any, Any]:
        return None, lambda rel: str(self.path(rel))


class ObjectFiles(Files):
    """A prefix in an object store reached through fsspec (S3 through s3fs, GCS through gcsfs, ...)."""

    def __init__(self, url: str, fs: Any = None) -> None:
        parts = urlsplit(url)
        if parts.username or parts.password or "@" in parts.netloc:
            raise HarvestError(f"{redact(_no_userinfo(url))}: credentials in a URL are refused (they would show in "
                               "logs and process lists); give them the usual way: for S3 AWS_PROFILE or "
                               "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment, for GCS "
                               "GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`")
        if parts.query or parts.fragment:
            raise HarvestError(f"{_no_userinfo(url).split('?')[0]}: give the store as scheme://bucket/prefix, "
                               "without ?query or #fragment (options come from the environment)")
        self.scheme = parts.scheme.lower()
        if fs is None:
            fs = _filesystem(self.scheme, url)
        self.fs = fs
        self.root = (parts.netloc + parts.path).rstrip("/")
        if not parts.netloc:
            raise HarvestError(f"{url}: name a bucket, as in {self.scheme}://bucket/prefix")
        self.bucket = parts.netloc
        self.url = f"{self.scheme}://{self.root}"
        self.atomic_create = self._conditional_puts()

    # -- names ------------------------------------------------------------
    def key(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def path(self, rel: str = "") -> str:
        return f"{self.scheme}://{self.key(rel)}"

    # -- reading ----------------------------------------------------------
    def list(self, sub: str) -> dict[str, Stat | None]:
        try:
            entries = self.fs.ls(self.key(sub), detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        out: dict[str, Stat | None] = {}
        for entry in entries:
            name = PurePosixPath(entry["name"].rstrip("/")).name
            out[name] = _stat(entry) if entry.get("type") == "file" else None
        return dict(sorted(out.items()))

    def stat(self, rel: str) -> Stat:
        return _stat(self.fs.info(self.key(rel), refresh=True))

    def get(self, rel: str) -> bytes:
        return self.fs.cat_file(self.key(rel))

    def open(self, rel: str) -> io.BufferedIOBase:
        return self.fs.open(self.key(rel), "rb", cache_type="none", block_size=1 << 20)

    def exists(self) -> bool:
        return self.fs.exists(self.bucket)

    def is_file(self, rel: str = "") -> bool:
        try:
            return self.fs.isfile(self.key(rel))
        except (FileNotFoundError, OSError):
            return False

    # -- writing: one PUT each, all-or-nothing -----------------------------
    def put(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self.key(rel), data)

    def create(self, rel: str, data: bytes) -> bool:
        if self.atomic_create:
            try:
                self.fs.pipe_file(self.key(rel), data, mode="create")
            except FileExistsError:
                return False
            return True
        if self.fs.exists(self.key(rel)):  # not atomic: two writers starting in the same instant both win
            return False
        self.put(rel, data)
        return True

    def replace_if(self, rel: str, data: bytes, identity: tuple, content: bytes) -> bool:
        etag = identity[1] if len(identity) > 1 else None
        if self.scheme in ("s3", "s3a") and etag and self.atomic_create:
            try:  # S3 If-Match: only if the object still has this ETag
                self.fs.pipe_file(self.key(rel), data, IfMatch=etag)
            except (FileExistsError, FileNotFoundError):
                return False
            except OSError as exc:
                if "pre-condition" in str(exc).lower() or "PreconditionFailed" in str(exc):
                    return False
                raise
            return True
        try:  # read, compare, write: a window of one round trip (documented as advisory)
            if self.get(rel) != content:
                return False
        except FileNotFoundError:
            return False
        self.put(rel, data)
        return True

    def delete(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.key(rel))
        except FileNotFoundError:
            pass

    def move(self, rel: str, dest: str) -> str:
        self.fs.copy(self.key(rel), self.key(dest))  # an object store has no rename: copy, then delete
        self.delete(rel)
        return self.path(dest)

    def arrow(self) -> tuple[Any, Any]:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.fs)), self.key

    def _conditional_puts(self) -> bool:
        """Whether this filesystem writes "only if absent" atomically (S3 If-None-Match, GCS generation 0)."""
        try:
            params = inspect.signature(self.fs._pipe_file if hasattr(self.fs, "_pipe_file") else self.fs.pipe_file)
        except (TypeError, ValueError):
            return False
        return "mode" in params.parameters


def _stat(entry: dict) -> Stat:
    size = int(entry.get("size") or 0)
    tag = entry.get("ETag") or entry.get("etag") or entry.get("generation") or entry.get("md5Hash")
    if tag is None:
        modified = entry.get("LastModified") or entry.get("mtime") or entry.get("updated")
        if modified is None:  # nothing tells a change: never trust the remembered sha256
            return Stat(size, (size, f"unknown-{uuid.uuid4().hex}"))
        tag = modified.isoformat() if isinstance(modified, _dt.datetime) else str(modified)
    return Stat(size, (size, str(tag)))


def _no_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"


def _filesystem(scheme: str, url: str) -> Any:
    try:
        import fsspec  # noqa: PLC0415 - only for object stores
    except ImportError:
        raise HarvestError(f"{url}: object stores need fsspec: pip install 'idc-cohort[s3]' (S3) or "
                           "'idc-cohort[gcs]' (Google Cloud Storage)") from None
    extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme)
    try:
        return fsspec.filesystem(scheme)
    except ImportError as exc:
        hint = f"pip install 'idc-cohort[{extra}]'" if extra else f"install the fsspec backend of {scheme}://"
        raise HarvestError(f"{url}: the {scheme}:// filesystem is not installed ({describe(exc)}); {hint}") from None
    except ValueError as exc:
        raise HarvestError(f"{url}: fsspec knows no filesystem {scheme}:// ({describe(exc)})") from None


def location(where: str | os.PathLike, fs: Any = None) -> Files:
    """The :class:`Files` of a harvest store: a local directory, or an fsspec URL (``s3://bucket/prefix``)."""
    text = os.fspath(where)
    if not is_url(text):
        return LocalFiles(text[len("file://"):] if text.startswith("file://") else text)
    return ObjectFiles(text, fs)


def iter_chunks(fh: io.BufferedIOBase, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := fh.read(size):
        yield chunk
