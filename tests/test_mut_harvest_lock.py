"""cohort/harvest/lock.py in one process: flock conflicts between two open files of the same lock, the
holder line, take-over, other hosts, and deterministic faults (a file replaced while being locked).

flock locks belong to an open file description, so a second DirectoryLock in the same process
conflicts with the first exactly as a second process would; no subprocess is needed.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket

import pytest

from cohort import HarvestError
from cohort.harvest import lock as lock_module
from cohort.harvest.lock import LOCK_NAME, DirectoryLock

HOST = socket.gethostname()


def _holder(path) -> dict:
    text = path.read_text()
    assert text.endswith("}\n") and text.count("\n") == 1
    return json.loads(text)


def test_acquire_writes_the_holder_and_release_deletes_the_file(tmp_path):
    assert LOCK_NAME == "harvest.lock"
    lock = DirectoryLock(str(tmp_path), "run-1")
    assert lock.path == tmp_path / "harvest.lock" and not lock.held
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    assert lock.acquire() is lock and lock.held
    me = _holder(tmp_path / LOCK_NAME)
    assert set(me) == {"pid", "host", "run_id", "started"}
    assert (me["pid"], me["host"], me["run_id"]) == (os.getpid(), HOST, "run-1")
    started = dt.datetime.fromisoformat(me["started"])
    assert started.tzinfo == dt.timezone.utc and started.microsecond == 0 and "." not in me["started"]
    assert before <= started <= dt.datetime.now(dt.timezone.utc)
    lock.release()
    assert not lock.held and not (tmp_path / LOCK_NAME).exists()
    lock.release()  # twice: nothing to do
    assert not lock.held


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    with DirectoryLock(tmp_path, "first") as first:
        assert first.held
        me = _holder(tmp_path / LOCK_NAME)
        second = DirectoryLock(tmp_path, "second")
        with pytest.raises(HarvestError) as err:
            second.acquire()
        assert str(err.value) == (
            f"another harvest is writing to {tmp_path}: PID {os.getpid()} on host {HOST} (run first, started "
            f"{me['started']}) holds {tmp_path / LOCK_NAME}; wait for it to finish (one writer per directory), or "
            "harvest into another directory")
        assert not second.held
    assert not first.held and not (tmp_path / LOCK_NAME).exists()
    with DirectoryLock(tmp_path, "third"):  # free again
        assert _holder(tmp_path / LOCK_NAME)["run_id"] == "third"


def test_a_locked_file_without_a_holder_yet(tmp_path):
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(HarvestError) as err:
            DirectoryLock(tmp_path, "r").acquire()
        assert str(err.value).startswith(
            f"another harvest is writing to {tmp_path}: a process that has not written its name yet holds ")
    finally:
        os.close(fd)


def test_a_stale_lock_of_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    stale = {"pid": 999999999, "host": HOST, "run_id": "old-run", "started": "2020-01-01T00:00:00+00:00"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale) + "\n" + " " * 500)  # longer than the new line
    with caplog.at_level(logging.WARNING, logger="cohort.harvest.lock"):
        lock = DirectoryLock(tmp_path, "new-run").acquire()
    try:
        assert [r.getMessage() for r in caplog.records] == [
            f"taking over the harvest lock {tmp_path / LOCK_NAME} left by PID 999999999 on host {HOST} "
            "(run old-run, started 2020-01-01T00:00:00+00:00) (that process is gone)"]
        assert caplog.records[0].levelno == logging.WARNING
        assert _holder(tmp_path / LOCK_NAME)["run_id"] == "new-run"  # no leftover of the longer old content
    finally:
        lock.release()


@pytest.mark.parametrize("content", ["", "junk{", "[1, 2]", "null", "\xff\xfe"])
def test_an_empty_or_junk_lock_file_is_taken_over_silently(tmp_path, caplog, content):
    (tmp_path / LOCK_NAME).write_bytes(content.encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="cohort.harvest.lock"), DirectoryLock(tmp_path, "r") as lock:
        assert lock.held and _holder(tmp_path / LOCK_NAME)["run_id"] == "r"
    assert caplog.records == []


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    other = {"pid": 12, "host": HOST + "-elsewhere", "run_id": "x", "started": "s"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    lock = DirectoryLock(tmp_path, "r")
    with pytest.raises(HarvestError) as err:
        lock.acquire()
    path = tmp_path / LOCK_NAME
    assert str(err.value) == (f"{path} says PID 12 on host {HOST}-elsewhere (run x, started s) is writing to this "
                              f"directory from another host; if no harvest runs there any more, delete {path} and "
                              "run again")
    assert not lock.held and json.loads(path.read_text()) == other
    with pytest.raises(HarvestError):
        lock.acquire()  # still refused: the file was not taken over (and the failed try left no lock held)


def test_a_holder_without_a_host_is_another_host(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1}))
    with pytest.raises(HarvestError) as err:
        DirectoryLock(tmp_path, "r").acquire()
    assert "PID 1 on host None (run None, started None) is writing to this directory from another host" in str(err.value)


def test_a_directory_that_does_not_exist(tmp_path):
    with pytest.raises(HarvestError) as err:
        DirectoryLock(tmp_path / "missing", "r").acquire()
    assert str(err.value) == (f"cannot create the lock file {tmp_path / 'missing' / LOCK_NAME} (No such file or "
                              "directory); give a directory you can write to")


def test_a_file_system_without_locks(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock_module.fcntl, "flock", no_locks)
    with pytest.raises(HarvestError) as err:
        DirectoryLock(tmp_path, "r").acquire()
    assert str(err.value) == (f"cannot lock {tmp_path / LOCK_NAME} ({os.strerror(errno.ENOLCK)}): harvest into a "
                              "directory on a local file system")


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.EACCES])
def test_every_busy_errno_is_another_harvest(tmp_path, monkeypatch, code):
    def busy(fd, op):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(lock_module.fcntl, "flock", busy)
    with pytest.raises(HarvestError, match="another harvest is writing to"):
        DirectoryLock(tmp_path, "r").acquire()


def _replacing_flock(monkeypatch, times: int, *, delete: bool = False) -> list[int]:
    """flock that, the first ``times`` calls, replaces (or deletes) the lock file just before locking it."""
    real = fcntl.flock
    calls = []

    def flock(fd, op):
        calls.append(fd)
        if len(calls) <= times:
            path = calls_path[0]
            path.unlink()
            if not delete:
                path.write_text("")
        return real(fd, op)

    calls_path: list = []
    monkeypatch.setattr(lock_module.fcntl, "flock", flock)
    return calls, calls_path


@pytest.mark.parametrize("delete", [False, True])
def test_a_file_replaced_while_locking_is_locked_again(tmp_path, monkeypatch, delete):
    calls, where = _replacing_flock(monkeypatch, 2, delete=delete)
    where.append(tmp_path / LOCK_NAME)
    lock = DirectoryLock(tmp_path, "r").acquire()
    try:
        assert len(calls) == 3 and lock.held
        st = os.stat(tmp_path / LOCK_NAME)
        assert os.fstat(lock._fd).st_ino == st.st_ino and _holder(tmp_path / LOCK_NAME)["run_id"] == "r"
    finally:
        lock.release()


def test_a_file_that_keeps_being_replaced(tmp_path, monkeypatch):
    calls, where = _replacing_flock(monkeypatch, 1000)
    where.append(tmp_path / LOCK_NAME)
    lock = DirectoryLock(tmp_path, "r")
    with pytest.raises(HarvestError) as err:
        lock.acquire()
    assert str(err.value) == (f"cannot lock {tmp_path / LOCK_NAME}: it keeps being replaced; is another harvest "
                              "starting?")
    assert len(calls) == 10 and not lock.held


# -- what the first mutation run showed untested (bench/MUTATION.md) ----------------------------------
def test_the_lock_file_is_rw_r__r__less_the_umask(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with DirectoryLock(tmp_path, "r"):
        assert os.stat(tmp_path / LOCK_NAME).st_mode & 0o777 == 0o644 & ~umask


def test_release_when_the_file_is_already_gone(tmp_path):
    lock = DirectoryLock(tmp_path, "r").acquire()
    (tmp_path / LOCK_NAME).unlink()
    lock.release()
    assert not lock.held


def test_a_holder_with_bytes_that_are_not_utf8_is_still_read(tmp_path, caplog):
    stale = ('{"pid": 999999999, "host": "%s", "run_id": "r\xff", "started": "s"}' % HOST).encode("latin-1")
    (tmp_path / LOCK_NAME).write_bytes(stale)
    with caplog.at_level(logging.WARNING, logger="cohort.harvest.lock"), DirectoryLock(tmp_path, "new"):
        pass
    assert [r.getMessage() for r in caplog.records] == [
        f"taking over the harvest lock {tmp_path / LOCK_NAME} left by PID 999999999 on host {HOST} (run r\ufffd, "
        "started s) (that process is gone)"]


def test_only_the_first_4096_bytes_are_read(tmp_path, caplog):
    head = '{"pid": 999999999, "host": "%s", "run_id": "' % HOST
    tail = '"}'
    text = head + "x" * (4097 - len(head) - len(tail)) + tail
    assert len(text.encode()) == 4097
    (tmp_path / LOCK_NAME).write_text(text)
    with caplog.at_level(logging.WARNING, logger="cohort.harvest.lock"), DirectoryLock(tmp_path, "new"):
        pass
    assert caplog.records == []  # cut at 4096 bytes it is not JSON: junk, taken over silently
