"""One writer per harvest store: a lock file locally (:class:`DirectoryLock`), a lease object in an object store
(:class:`ObjectLease`).

``DIR/harvest.lock`` is locked with ``flock`` (an advisory lock the kernel
drops when its process dies, however it dies) and holds one JSON line: PID,
host, start time and run id of the holder, for the messages. So:

- a second run into the same directory finds the file locked and stops with a
  :class:`~cohort.errors.HarvestError` naming the holder and the file;
- a lock left by a dead process (``kill -9``, a crash) is not locked any
  more: the next run takes it over and says whose it was;
- a lock file naming another host is never taken over (the lock may be local
  to that host, e.g. on a network file system mounted with ``local_lock``):
  the error tells the user to delete the file if no harvest runs there.

Deleting the file on release is safe: a run that opened the old file before
it was deleted checks, after locking, that the path still names the file it
locked, and starts again if not.

An object store has no ``flock``: ``PREFIX/harvest.lease`` is a small JSON
object (run id, host, PID, expiry) created with a conditional PUT
(``If-None-Match: *`` on S3; fsspec's ``mode="create"``), so of two runs
starting at once exactly one creates it. The holder renews it every
:data:`LEASE_SECONDS` / 4 with a PUT conditional on the ETag it last wrote
(``If-Match``), and checks it before every commit record: a run that finds its
lease taken over stops with a HarvestError before committing. A lease whose
holder died expires after :data:`LEASE_SECONDS`, and the next run takes it
over (conditionally, so only one run can). What it cannot rule out is a
holder that stalls for longer than the lease between its check and its
commit PUT (a paused VM): the lease is a strong guard, not a fencing token.
Where the filesystem has no conditional PUT the lease is advisory (read, then
write) and the store says so in a warning.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HarvestError
from .fs import describe

if TYPE_CHECKING:
    from .fs import ObjectFiles

log = logging.getLogger(__name__)

LOCK_NAME = "harvest.lock"
LEASE_NAME = "harvest.lease"
#: How long a lease lasts without renewal (a dead holder's lease is taken over after this).
LEASE_SECONDS = 300.0


class DirectoryLock:
    """The exclusive write lock of one harvest directory (:meth:`acquire`, :meth:`release`)."""

    def __init__(self, root: str | os.PathLike, run_id: str) -> None:
        self.path = Path(root) / LOCK_NAME
        self.run_id = run_id
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        for _ in range(10):  # the file was replaced between open and lock: try again
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise HarvestError(
                        f"another harvest is writing to {self.path.parent}: {_describe(holder)} holds {self.path}; "
                        "wait for it to finish (one writer per directory), or harvest into another directory"
                    ) from None
                raise HarvestError(f"cannot lock {self.path} ({exc.strerror}): harvest into a directory "
                                   "on a local file system") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._take_over(fd, _read(fd))
            return self
        raise HarvestError(f"cannot lock {self.path}: it keeps being replaced; is another harvest starting?")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise HarvestError(f"cannot create the lock file {self.path} ({exc.strerror}); "
                               "give a directory you can write to") from None

    def _take_over(self, fd: int, holder: dict | None) -> None:
        if holder is not None:
            if holder.get("host") != socket.gethostname():
                os.close(fd)
                raise HarvestError(
                    f"{self.path} says {_describe(holder)} is writing to this directory from another host; "
                    f"if no harvest runs there any more, delete {self.path} and run again"
                )
            log.warning("taking over the harvest lock %s left by %s (that process is gone)", self.path,
                        _describe(holder))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "run_id": self.run_id,
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Delete the lock file and drop the lock (the file first: a waiting run then retries on a new one)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict | None:
    """The holder a lock file names (None when empty or unreadable: a lock being written, or junk)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "a process that has not written its name yet"
    return (f"PID {holder.get('pid')} on host {holder.get('host')} (run {holder.get('run_id')}, "
            f"started {holder.get('started')})")


class ObjectLease:
    """The write lease of a harvest store in an object store (see the module docstring)."""

    def __init__(self, files: ObjectFiles, run_id: str, seconds: float = LEASE_SECONDS) -> None:
        self.files = files
        self.run_id = run_id
        self.seconds = seconds
        self.path = files.path(LEASE_NAME)
        self._identity: tuple | None = None
        self._mine = self._next = b""  # the lease as this run last wrote it, and as it is about to write it
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def _record(self) -> bytes:
        now = time.time()
        me = {"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(), "renewed": _iso(now),
              "expires": _iso(now + self.seconds), "expires_epoch": now + self.seconds}
        self._next = (json.dumps(me) + "\n").encode()
        return self._next

    def acquire(self) -> ObjectLease:
        if not self.files.atomic_create:
            log.warning("%s cannot write objects conditionally: the write lease %s is advisory (two runs started "
                        "in the same instant could both write)", self.files.url, self.path)
        try:
            for _ in range(5):
                if self.files.create(LEASE_NAME, self._record()):
                    break
                try:
                    current = self.files.stat(LEASE_NAME)
                    raw = self.files.get(LEASE_NAME)
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                try:
                    holder = json.loads(raw)
                except ValueError:
                    holder = None
                expires = holder.get("expires_epoch", 0) if isinstance(holder, dict) else 0
                if time.time() < expires:
                    raise HarvestError(
                        f"another harvest is writing to {self.files.url}: {_describe(holder)} holds {self.path} "
                        f"until {holder.get('expires')} (renewed while it runs); wait for it to finish (one writer "
                        "per store), or harvest into another prefix")
                if self.files.replace_if(LEASE_NAME, self._record(), current.identity, raw):
                    log.warning("taking over the expired harvest lease %s left by %s", self.path, _describe(holder))
                    break
            else:
                raise HarvestError(f"cannot take the lease {self.path}: it keeps changing; is another harvest starting?")
            self._mine = self._next
            self._identity = self.files.stat(LEASE_NAME).identity
        except OSError as exc:
            raise HarvestError(f"cannot write the lease {self.path} ({describe(exc)}); check the bucket and your "
                               "credentials") from None
        self._thread = threading.Thread(target=self._renew_loop, name="harvest-lease", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            self.renew()

    def renew(self) -> None:
        """Extend the lease (conditionally on it being the one this run last wrote)."""
        with self._mutex:
            if self._lost or self._identity is None:
                return
            try:
                if self.files.replace_if(LEASE_NAME, self._record(), self._identity, self._mine):
                    self._mine = self._next
                    self._identity = self.files.stat(LEASE_NAME).identity
                else:
                    self._lost = f"{self.path} was changed by another process"
            except FileNotFoundError:
                self._lost = f"{self.path} was deleted"
            except OSError as exc:  # a network blip: try again at the next beat; check() tells if it expired
                log.warning("cannot renew the harvest lease %s (%s)", self.path, type(exc).__name__)

    def check(self) -> None:
        """Raise a HarvestError unless this run still holds the lease (called before each commit record)."""
        with self._mutex:
            if self._lost is None:
                try:  # the content, not the ETag: every filesystem can compare it
                    if self.files.get(LEASE_NAME) != self._mine:
                        self._lost = f"{self.path} was taken over by another run"
                except FileNotFoundError:
                    self._lost = f"{self.path} was deleted"
        if self._lost:
            raise HarvestError(f"this harvest lost its write lease: {self._lost}; nothing more is committed. "
                               "Make sure one run at a time writes to the store, then run the same command again")

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still this run's."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        with self._mutex:
            try:
                if self._lost is None and self.files.get(LEASE_NAME) == self._mine:
                    self.files.delete(LEASE_NAME)
            except OSError:
                pass  # it expires by itself
            self._identity = None

    @property
    def held(self) -> bool:
        return self._thread is not None and self._lost is None

    def __enter__(self) -> ObjectLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat(timespec="seconds")
