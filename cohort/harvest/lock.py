"""One writer per harvest directory: an exclusive lock file that says who holds it.

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
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from ..errors import HarvestError

log = logging.getLogger(__name__)

LOCK_NAME = "harvest.lock"


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
