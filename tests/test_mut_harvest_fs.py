"""cohort/harvest/fs.py, every outcome written out: URL or path, redaction, a local directory, and an
object store through fsspec (its real in-memory filesystem, and for S3's conditional PUT a real
S3-compatible server: moto). Written for the survivors of a mutation run (bench/mutation.py harvest.fs).

A few filesystems are small classes written here: they stand for fsspec backends without
conditional PUTs, or inject a fault (a listing race, a failing isfile), which no installed backend
shows on demand.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
import uuid
from pathlib import Path

import fsspec
import pytest

from cohort.errors import HarvestError
from cohort.harvest import fs as fsmod
from cohort.harvest.fs import (
    LocalFiles, ObjectFiles, Stat, _no_userinfo, _stat, describe, is_url, iter_chunks, location, redact,
)


def _memory() -> tuple[ObjectFiles, str]:
    bucket = f"b{uuid.uuid4().hex[:10]}"
    return ObjectFiles(f"memory://{bucket}/pre/fix/"), bucket


# -- names and texts ------------------------------------------------------------------------------------------


def test_is_url():
    for url in ("s3://b/p", "S3://b", "gs://b", "a+b.c-d://x", "memory://b"):
        assert is_url(url) is True, url
    for path in ("file:///tmp/x", "FILE://x", "local://x", "Local://x", "/tmp/x", "out", "1s3://x", "s3:/x",
                 "://x", Path("s3:/x"), Path("out")):
        assert is_url(path) is False, path
    assert is_url(3) is False and is_url(None) is False


def test_redact_and_describe(monkeypatch):
    for name in fsmod.SECRET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3tVALUE")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "conn-string-1")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "abc")  # shorter than 4: too short to be told from ordinary text
    monkeypatch.setenv("GCS_OAUTH_TOKEN", "wxyz")  # 4: long enough
    text = "key s3cr3tVALUE and conn-string-1 and abc, wxyz"
    assert redact(text) == "key *** and *** and abc, ***"
    assert redact("u?X-Amz-Security-Token=tok1&Signature=a/b+c x sig=1 ACCESS_TOKEN=zz;&other=1") == \
        "u?X-Amz-Security-Token=***&Signature=*** x sig=*** ACCESS_TOKEN=***&other=1"
    assert redact("signature= nothing") == "signature= nothing"
    assert describe(ValueError("first s3cr3tVALUE\nsecond")) == "ValueError: first ***"
    assert describe(ValueError("  \n  ")) == "ValueError" and describe(KeyError()) == "KeyError"
    assert describe(OSError("  padded  ")) == "OSError: padded"
    assert _no_userinfo("s3://user:pw@host/x/y?q=1#f") == "s3://host/x/y"
    assert _no_userinfo("gs://b/p") == "gs://b/p"
    assert _no_userinfo("s3://u:p@ss@host/x") == "s3://host/x"  # an @ in the password: the host is after the last


def test_iter_chunks():
    assert list(iter_chunks(io.BytesIO(b"abcdefg"), 3)) == [b"abc", b"def", b"g"]
    assert list(iter_chunks(io.BytesIO(b""), 3)) == []
    sizes = [len(c) for c in iter_chunks(io.BytesIO(b"x" * (2 * 2**20 + 5)))]
    assert sizes == [2**20, 2**20, 5]


def test_stat_of_an_object_entry():
    assert _stat({"size": 5, "ETag": '"e1"', "etag": "e2", "generation": 3}) == Stat(5, (5, '"e1"'))
    assert _stat({"size": None, "etag": "e2", "generation": 3}) == Stat(0, (0, "e2"))
    assert _stat({"size": "7", "generation": 3, "md5Hash": "m"}) == Stat(7, (7, "3"))
    assert _stat({"size": 1, "md5Hash": "m", "LastModified": "x"}) == Stat(1, (1, "m"))
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert _stat({"size": 2, "LastModified": when, "mtime": "m"}) == Stat(2, (2, "2026-01-02T03:04:05+00:00"))
    assert _stat({"size": 2, "mtime": 12.5, "updated": "u"}) == Stat(2, (2, "12.5"))
    assert _stat({"size": 2, "updated": "2026-01-01"}) == Stat(2, (2, "2026-01-01"))
    a, b = _stat({"size": 4}), _stat({})
    assert a.size == 4 and a.identity[0] == 4 and a.identity[1].startswith("unknown-") and len(a.identity[1]) == 40
    assert b == Stat(0, b.identity) and b.identity[0] == 0 and b.identity != _stat({}).identity  # never equal twice


# -- a local directory --------------------------------------------------------------------------------------------


def test_local_files(tmp_path, monkeypatch):
    files = location(tmp_path)
    assert isinstance(files, LocalFiles) and (files.local, files.atomic_create) == (True, True)
    assert files.url == str(tmp_path) and files.root == tmp_path
    assert files.path() == tmp_path and files.path("a/b") == tmp_path / "a" / "b"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"12345")
    (tmp_path / "sub" / "a.bin").write_bytes(b"1")
    (tmp_path / "sub" / "dir").mkdir()
    listed = files.list("sub")
    assert list(listed) == ["a.bin", "b.bin", "dir"] and listed["dir"] is None
    st = (tmp_path / "sub" / "b.bin").stat()
    assert listed["b.bin"] == Stat(5, (5, st.st_mtime_ns, st.st_ino)) == files.stat("sub/b.bin")
    assert files.list("nothing") == {} and files.list("sub/a.bin") == {}
    with pytest.raises(FileNotFoundError):
        files.stat("sub/none")
    assert files.get("sub/b.bin") == b"12345"
    with files.open("sub/b.bin") as fh:
        assert fh.read() == b"12345"
    moved = files.move("sub/b.bin", "new/deep/b.bin")
    assert moved == tmp_path / "new" / "deep" / "b.bin" and moved.read_bytes() == b"12345"
    assert not (tmp_path / "sub" / "b.bin").exists()
    (tmp_path / "sub" / "c.bin").write_bytes(b"c")
    assert files.move("sub/c.bin", "new/deep/c.bin").read_bytes() == b"c"  # into a directory that exists
    files.delete("sub/a.bin")
    files.delete("sub/a.bin")  # missing: nothing
    assert not (tmp_path / "sub" / "a.bin").exists()
    fs, to_path = files.arrow()
    assert fs is None and to_path("x/y") == str(tmp_path / "x" / "y")

    # a file renamed away between the listing and its stat is left out, the others still listed
    for name in ("c1", "c2", "c3"):
        (tmp_path / "race" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "race" / name).write_bytes(b"x")
    real = LocalFiles._stat

    def vanishing(path):
        if path.name == "c2":
            raise FileNotFoundError(path)
        return real(path)

    monkeypatch.setattr(LocalFiles, "_stat", staticmethod(vanishing))
    assert list(files.list("race")) == ["c1", "c3"]


def test_location_of_paths_and_urls(tmp_path):
    assert location(f"file://{tmp_path}/x").root == tmp_path / "x"
    assert location(str(tmp_path)).root == tmp_path
    assert isinstance(location("relative/dir"), LocalFiles) and location("relative/dir").root == Path("relative/dir")
    given = _NoConditional()
    files = location("memory://bkt/p", given)
    assert isinstance(files, ObjectFiles) and files.fs is given and files.url == "memory://bkt/p"
    assert files.atomic_create is False


# -- an object store --------------------------------------------------------------------------------------------


def test_object_store_urls_are_checked():
    memory = fsspec.filesystem("memory")
    fix = ("credentials in a URL are refused (they would show in logs and process lists); give them the usual way: "
           "for S3 AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment, for GCS "
           "GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth application-default login`")
    for url in ("memory://user:pw@b/p", "memory://user@b/p", "memory://@b/p", "memory://:pw@b/p"):
        with pytest.raises(HarvestError) as err:
            ObjectFiles(url, memory)
        assert str(err.value) == f"memory://b/p: {fix}", url
    for url in ("memory://b/p?region=x", "memory://b/p#frag", "memory://b/my p?x=1"):
        with pytest.raises(HarvestError) as err:
            ObjectFiles(url, memory)
        assert str(err.value) == (f"{url.split('?')[0].split('#')[0]}: give the store as scheme://bucket/prefix, without ?query or "
                                  "#fragment (options come from the environment)")
    with pytest.raises(HarvestError) as err:
        ObjectFiles("MEMORY:///just/a/path", memory)
    assert str(err.value) == "MEMORY:///just/a/path: name a bucket, as in memory://bucket/prefix"


def test_object_store_names_and_operations():
    files, bucket = _memory()
    assert (files.scheme, files.bucket, files.root, files.url) == ("memory", bucket, f"{bucket}/pre/fix",
                                                                   f"memory://{bucket}/pre/fix")
    assert (files.local, files.atomic_create) == (False, True)
    assert files.key() == f"{bucket}/pre/fix" and files.key("a/b") == f"{bucket}/pre/fix/a/b"
    assert files.path() == f"memory://{bucket}/pre/fix" and files.path("a") == f"memory://{bucket}/pre/fix/a"
    upper = ObjectFiles(f"MEMORY://{bucket}/X")
    assert (upper.scheme, upper.url) == ("memory", f"memory://{bucket}/X")

    assert files.list("parts") == {} and files.exists() is False
    files.put("parts/b", b"12345")
    files.put("parts/a", b"1")
    files.put("parts/dir/c", b"c")
    listed = files.list("parts")
    assert list(listed) == ["a", "b", "dir"] and listed["dir"] is None
    assert listed["b"].size == 5 and listed["b"].identity[1].startswith("unknown-")
    assert files.stat("parts/b").size == 5 and files.exists() is True
    assert files.get("parts/b") == b"12345"
    with files.open("parts/b") as fh:
        assert fh.read() == b"12345"
    assert files.is_file("parts/b") is True and files.is_file("parts/dir") is False
    assert files.is_file("parts/none") is False
    files.put("parts/sp ", b"space")  # a key ending in a blank keeps it
    files.put("parts/BOX", b"x")
    assert {"sp ", "BOX"} <= set(files.list("parts")) and files.get("parts/sp ") == b"space"
    whole = ObjectFiles(f"memory://{bucket}/pre/fix/parts/b")  # the prefix itself is an object
    assert whole.is_file() is True and files.is_file() is False

    assert files.create("lease", b"one") is True
    assert files.create("lease", b"two") is False and files.get("lease") == b"one"
    assert files.replace_if("lease", b"three", (3, "any"), b"not it") is False and files.get("lease") == b"one"
    assert files.replace_if("lease", b"three", (3, "any"), b"one") is True and files.get("lease") == b"three"
    assert files.replace_if("gone", b"x", (1, "e"), b"") is False and not files.is_file("gone")

    assert files.move("parts/b", "done/b") == f"memory://{bucket}/pre/fix/done/b"
    assert files.get("done/b") == b"12345" and files.is_file("parts/b") is False
    files.delete("done/b")
    files.delete("done/b")  # missing: nothing
    assert files.is_file("done/b") is False

    arrow_fs, to_key = files.arrow()
    assert to_key("parts/a") == f"{bucket}/pre/fix/parts/a"
    with arrow_fs.open_input_stream(to_key("parts/a")) as stream:
        assert stream.read() == b"1"


class _NoConditional:
    """An fsspec backend without conditional PUTs (its pipe_file takes no ``mode``), over fsspec's memory."""

    def __init__(self):
        self.inner = fsspec.filesystem("memory")

    def pipe_file(self, path, data):
        self.inner.pipe_file(path, data)

    def exists(self, path):
        return self.inner.exists(path)

    def cat_file(self, path):
        return self.inner.cat_file(path)

    def isfile(self, path):
        raise OSError("listing refused")


class _AsyncOnly(_NoConditional):
    """A backend whose async ``_pipe_file`` is the one that takes ``mode`` (as s3fs's)."""

    def _pipe_file(self, path, data, mode="overwrite"):
        raise NotImplementedError


class _AsyncWithout:
    """Its async ``_pipe_file`` takes no ``mode``, though pipe_file does: the async one counts."""

    def _pipe_file(self, path, data):
        raise NotImplementedError

    def pipe_file(self, path, data, mode="overwrite"):
        raise NotImplementedError


def test_conditional_puts_and_the_non_atomic_create():
    bucket = f"b{uuid.uuid4().hex[:10]}"
    files = ObjectFiles(f"memory://{bucket}/p", _NoConditional())
    assert files.atomic_create is False
    assert files.create("lease", b"one") is True and files.create("lease", b"two") is False
    assert files.get("lease") == b"one"
    assert files.create("second", b"2") is True and files.get("second") == b"2"  # the store has files: not this one
    assert files.is_file("lease") is False  # the backend's OSError reads as "not a file"
    assert ObjectFiles(f"memory://{bucket}/p", _AsyncOnly()).atomic_create is True
    assert ObjectFiles(f"memory://{bucket}/p", _AsyncWithout()).atomic_create is False

    class Uninspectable:
        pipe_file = 3  # not callable: no signature

    assert ObjectFiles(f"memory://{bucket}/p", Uninspectable()).atomic_create is False


def test_filesystems_that_cannot_be_made(monkeypatch):
    with pytest.raises(HarvestError) as err:
        ObjectFiles("nosuch://b/p")
    assert str(err.value) == "nosuch://b/p: fsspec knows no filesystem nosuch:// (ValueError: Protocol not known: nosuch)"
    with pytest.raises(HarvestError) as err:
        ObjectFiles("abfs://b/p")
    assert str(err.value) == ("abfs://b/p: the abfs:// filesystem is not installed (ImportError: Install adlfs to "
                              "access Azure Datalake Gen2 and Azure Blob Storage); install the fsspec backend of abfs://")
    with pytest.raises(HarvestError) as err:
        ObjectFiles("GS://b/p")
    assert str(err.value) == ("GS://b/p: the gs:// filesystem is not installed (ImportError: Please install gcsfs to "
                              "access Google Storage); pip install 'idc-cohort[gcs]'")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    # an S3 or GCS backend that is not installed: the extra to install is named
    registered = sys.modules["fsspec.registry"]._registry
    monkeypatch.setitem(sys.modules, "s3fs", None)
    for scheme in ("s3", "s3a", "gcs"):
        monkeypatch.delitem(registered, scheme, raising=False)
    for url, extra, why in (("s3://b/p", "s3", "Install s3fs to access S3"), ("s3a://b/p", "s3", "Install s3fs to access S3"),
                            ("gcs://b/p", "gcs", "Please install gcsfs to access Google Storage")):
        with pytest.raises(HarvestError) as err:
            ObjectFiles(url)
        scheme = url.split(":")[0]
        assert str(err.value) == (f"{url}: the {scheme}:// filesystem is not installed (ImportError: {why}); "
                                  f"pip install 'idc-cohort[{extra}]'")
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(HarvestError) as err:
        ObjectFiles("s3://b/p")
    assert str(err.value) == ("s3://b/p: object stores need fsspec: pip install 'idc-cohort[s3]' (S3) or "
                              "'idc-cohort[gcs]' (Google Cloud Storage)")
    assert err.value.__cause__ is None and err.value.__suppress_context__


class _RefusingS3:
    """Stands for an S3 backend whose conditional PUT fails with the text ``text`` (texts of s3fs/botocore versions)."""

    def __init__(self, text):
        self.text = text

    def pipe_file(self, path, data, mode="overwrite", **kw):
        if "IfMatch" in kw:
            raise OSError(self.text)


def test_s3_precondition_failures_read_as_changed():
    for text in ("An error occurred (PreconditionFailed) when calling the PutObject operation",
                 "At least one of the Pre-Conditions you specified did not hold"):
        files = ObjectFiles("s3://b/p", _RefusingS3(text))
        assert files.atomic_create is True
        assert files.replace_if("lease", b"x", (1, '"etag"'), b"") is False, text
    with pytest.raises(OSError, match="^Access Denied$"):
        ObjectFiles("s3://b/p", _RefusingS3("Access Denied")).replace_if("lease", b"x", (1, '"etag"'), b"")


# -- S3's conditional PUT (If-Match), on a real S3-compatible server ----------------------------------------------


@pytest.fixture(scope="module")
def s3():
    from tests.support.s3 import MotoS3, require_moto

    require_moto()
    with MotoS3() as server:
        yield server


def test_s3_replace_if_matches_the_etag(s3, monkeypatch):
    import s3fs

    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = s3.make_bucket(f"b-{uuid.uuid4().hex[:10]}")
    try:
        files = ObjectFiles(f"s3://{bucket}/h")
        assert (files.scheme, files.atomic_create) == ("s3", True)
        assert files.create("lease", b"one") is True and files.create("lease", b"two") is False
        first = files.stat("lease")
        assert first.size == 3 and first.identity[1] == files.fs.info(f"{bucket}/h/lease")["ETag"]
        # the content argument is not consulted on S3: the ETag decides
        assert files.replace_if("lease", b"three", first.identity, b"whatever") is True
        assert files.get("lease") == b"three"
        assert files.replace_if("lease", b"four", first.identity, b"three") is False  # stale ETag
        assert files.get("lease") == b"three"
        assert files.replace_if("none", b"x", first.identity, b"") is False
        # s3a:// is S3 too: the ETag decides, not the content
        s3a = ObjectFiles(f"s3a://{bucket}/h")
        assert s3a.scheme == "s3a" and s3a.replace_if("lease", b"x", first.identity, b"three") is False
        assert files.get("lease") == b"three"
        # no ETag known: read, compare, write
        assert files.replace_if("lease", b"five", (5,), b"three") is True and files.get("lease") == b"five"
        assert files.replace_if("lease", b"six", (3, None), b"three") is False and files.get("lease") == b"five"
        assert list(files.list("")) == ["lease"]
        # another client adds an object: listings and stats are not served from s3fs's cache
        other = s3fs.S3FileSystem(skip_instance_cache=True)
        other.pipe_file(f"{bucket}/h/later", b"12")
        other.pipe_file(f"{bucket}/h/lease", b"seven!!")
        assert files.stat("lease").size == 7
        assert list(files.list("")) == ["later", "lease"]
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_s3_reads_stream_in_one_mib_ranges(s3, monkeypatch):
    import s3fs

    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = s3.make_bucket(f"b-{uuid.uuid4().hex[:10]}")
    try:
        files = ObjectFiles(f"s3://{bucket}/h")
        files.put("part", b"x" * (2**20 + 3))
        with files.open("part") as fh:  # no read-ahead cache: memory stays at one range
            assert (fh.blocksize, fh.cache.name, fh.mode) == (2**20, "none", "rb")
            assert [len(c) for c in iter_chunks(fh)] == [2**20, 3]
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
