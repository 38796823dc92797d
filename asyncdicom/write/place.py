"""Placement: a durable spool file gets its final name in the output tree, atomically, never
overwriting another instance.

A :class:`Placer` is shared by the threads that place files. It remembers the directories it
has made and checked (resolved inside the output directory), so the per-instance work is one
``link`` and one ``unlink``, and one directory ``fsync`` (shared by a batch of files when the
caller asks for it with :func:`sync_dirs`). :func:`flush_volume` makes a batch of spool files
durable at once before they are placed.
"""

from __future__ import annotations

import ctypes
import filecmp
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from asyncdicom.models import InstanceState
from asyncdicom.write.paths import confine, render_parts
from asyncdicom.write.spool import Header, fsync_dir, read_header


@dataclass(frozen=True, slots=True)
class Placed:
    """Where an instance ended: ``stored``, ``duplicate`` (same instance already there) or
    ``renamed``; ``relative`` is its path under the output directory."""

    directory: str
    name: str
    relative: str
    state: InstanceState
    size: int

    @property
    def path(self) -> Path:
        return Path(self.directory, self.name)


def _same_instance(path: str, spooled: str | Path, sop_uid: str) -> bool:
    """Whether the file at ``path`` is this very instance: the same SOP Instance UID and the same
    bytes (an archive may hold two different data sets under one UID; both are kept)."""
    try:
        if read_header(path, ()).sop_instance_uid != sop_uid:
            return False
    except ValueError:
        return False
    return filecmp.cmp(path, spooled, shallow=False)


def _numbered(name: str, number: int) -> str:
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}_{number}{dot}{suffix}" if dot else f"{name}_{number}"


class Placer:
    """Renders paths from headers and links spool files there (thread-safe). Plain strings on
    this path: pathlib's parsing cost more than the system calls."""

    def __init__(self, root: Path, structure: Sequence[str], filename: str) -> None:
        self.root = root.resolve()
        self.structure = tuple(structure)
        self.filename = filename
        self._dirs: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()

    @property
    def keywords(self) -> tuple[str, ...]:
        """The attributes paths are rendered from."""
        return (*self.structure, self.filename)

    def _directory(self, parts: tuple[str, ...]) -> str:
        """The confined, existing directory for ``parts`` (made and checked once per run)."""
        with self._lock:
            known = self._dirs.get(parts)
        if known is not None:
            return known
        directory = confine(self.root, PurePosixPath(*parts)) if parts else self.root
        made = [parent for parent in (directory, *directory.parents) if not parent.exists()]
        directory.mkdir(parents=True, exist_ok=True)
        for new in made:  # a new directory's entry in its parent must be durable too
            fsync_dir(new.parent)
        with self._lock:
            self._dirs[parts] = str(directory)
        return str(directory)

    def forget(self, parts: tuple[str, ...]) -> None:
        with self._lock:
            self._dirs.pop(parts, None)

    def place(self, spooled: str | Path, header: Header, *, synced: bool = False, sync_dir: bool = True) -> Placed:
        """Link ``spooled`` to its rendered path and remove it from the spool.

        ``synced`` says the caller already fsynced the file; otherwise it is fsynced here, so a
        file never has a name in the output tree before its bytes are on disk. Without
        ``sync_dir`` the caller must :func:`sync_dirs` the new path's directory before counting
        the instance as stored (so one fsync serves many files).
        """
        parts = render_parts(self.structure, self.filename, header.attrs)
        folders, name = parts[:-1], parts[-1]
        if not synced:
            fd = os.open(spooled, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        size = os.stat(spooled).st_size
        directory = self._directory(folders)
        sop_uid = header.sop_instance_uid
        candidate, number, remade = name, 0, False
        while True:
            target = f"{directory}/{candidate}"
            try:
                # link() fails if the name exists: no window in which another writer's file is replaced
                os.link(spooled, target)
            except FileExistsError:
                if _same_instance(target, spooled, sop_uid):
                    os.unlink(spooled)
                    return Placed(directory, candidate, "/".join((*folders, candidate)), InstanceState.DUPLICATE, size)
                number += 1
                candidate = _numbered(name, number)
                continue
            except FileNotFoundError:
                if remade:
                    raise
                self.forget(folders)  # the directory went away during the run: make it again
                directory, remade = self._directory(folders), True
                continue
            os.unlink(spooled)
            if sync_dir:
                fsync_dir(directory)
            state = InstanceState.STORED if number == 0 else InstanceState.RENAMED
            return Placed(directory, candidate, "/".join((*folders, candidate)), state, size)


def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        function: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # not Linux (or an old libc): files are fsynced one by one
        return None
    return function


_SYNCFS = _libc_syncfs()


def flush_volume(directory: str | Path, files: Iterable[str | Path]) -> None:
    """Make ``files`` (and every name made in ``directory``'s file system so far) durable: one
    ``syncfs`` for a whole batch, one journal commit instead of one per file; each file is
    fsynced where ``syncfs`` does not exist. Raises OSError."""
    if _SYNCFS is None:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number))
    finally:
        os.close(fd)


def sync_dirs(directories: Iterable[str | Path]) -> None:
    """fsync each directory once: makes the links :meth:`Placer.place` made there durable."""
    for directory in directories:
        fsync_dir(directory)


def place(spooled: str | Path, root: Path, structure: Sequence[str], filename: str, header: Header) -> Placed:
    """One-off :meth:`Placer.place` (fsyncs ``spooled`` first)."""
    return Placer(root, structure, filename).place(spooled, header)
