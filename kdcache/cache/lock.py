"""One build per cache at a time: an advisory lock file beside the cache."""

from __future__ import annotations

import errno
import os
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kdcache.errors import KdcacheError

from .objectstore import is_object_url


@contextmanager
def build_lock(path: str | Path) -> Iterator[Path | None]:
    """Hold an exclusive advisory lock (flock) on ``.<name>.lock`` beside the cache while building it.

    Two separate builds of one cache would otherwise race (one may delete the other's half-created
    store); the second is refused with a one-line error instead. The lock lives beside the cache, not in
    it, because creating or overwriting a cache empties its folder. The kernel drops the lock when the
    holder dies (kill -9 included), so a killed build never leaves a stale lock; the small file stays.
    Ranks of one torchrun build do not take it (they write disjoint shards): rank 0 holds it for them.
    Yields the lock path, or None where locking is unavailable (no fcntl, or a filesystem without locks).
    """
    if is_object_url(path):  # an object store has no locks: ranks write disjoint objects (objectstore.py)
        yield None
        return
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield None
        return
    lock = path.parent / f".{path.name}.lock"
    for folder in (path.parent, *path.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise KdcacheError(f"{path}: {folder} is a file, not a folder; choose another output path")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise KdcacheError(f"{path}: cannot create the output's lock file {lock} ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                warnings.warn(f"{lock}: cannot lock ({err.strerror}); building without a lock", stacklevel=2)
                yield None
                return
            holder = ""
            try:
                holder = Path(lock).read_text().strip()
            except OSError:
                pass
            raise KdcacheError(
                f"{path}: another build is writing this cache (lock {lock} held"
                + (f" by pid/host {holder}" if holder else "")
                + "); wait for it to finish, or stop it and rerun to resume"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield lock
    finally:
        os.close(fd)
