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
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import cast

from asyncdicom.models import InstanceState
from asyncdicom.write.paths import cleaned, confine, render_parts
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


log = logging.getLogger("asyncdicom.write")

REMEMBERED = 65536  # paths a placer remembers the instance of (about 10 MB at most)


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
        self._warned = False  # a value had characters replaced in a path (said once)
        self._placed: dict[str, str] = {}  # path → SOP Instance UID, of files placed by this run (bounded)

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

    def _remember(self, target: str, sop_uid: str) -> None:
        """Note which instance this run placed at ``target``: a later instance given the same
        name (files named by Instance Number, several series in one folder) then moves on to the
        next number without reading that file back. Bounded: past :data:`REMEMBERED` paths the
        notes start again (a path not noted is read, as before)."""
        with self._lock:
            if len(self._placed) >= REMEMBERED:
                self._placed.clear()
            self._placed[target] = sop_uid

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
        if not self._warned and any(cleaned(header.attrs.get(k, "")) for k in self.keywords):
            self._warned = True  # once a run; the values are patient data, never logged
            log.warning(
                "a value used in output paths held characters a file name must not (separators, control "
                "characters, marks that change the text's direction, or dots only); they became _ "
                "(further ones are not reported)"
            )
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
                if self._placed.get(target, sop_uid) == sop_uid and _same_instance(target, spooled, sop_uid):
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
            self._remember(target, sop_uid)
            if sync_dir:
                fsync_dir(directory)
            state = InstanceState.STORED if number == 0 else InstanceState.RENAMED
            return Placed(directory, candidate, "/".join((*folders, candidate)), state, size)


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux: each file's fdatasync writes it
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", function)


_SYNC_FILE_RANGE = _libc_sync_file_range()
_START_WRITEBACK = 2  # SYNC_FILE_RANGE_WRITE: queue the file's dirty pages for writing, do not wait


def flush_files(files: Iterable[str | Path]) -> None:
    """Make ``files`` durable, and only them: every file's writeback is started at once, then
    each is ``fdatasync``ed (the first one waits for the journal commit that the others then
    find done): one commit per batch, not one per file. A flush of the whole volume (``syncfs``)
    would also write every file still in the pipeline (originals waiting for the anonymizer,
    instances being received) and hold up every other writer on the volume meanwhile.
    Raises OSError."""
    fds: list[int] = []
    try:
        for path in files:
            fds.append(os.open(path, os.O_RDONLY))
        if _SYNC_FILE_RANGE is not None:
            for fd in fds:
                _SYNC_FILE_RANGE(fd, 0, 0, _START_WRITEBACK)  # a hint: an error shows in the fdatasync
        for fd in fds:
            os.fdatasync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def sync_dirs(directories: Iterable[str | Path]) -> None:
    """fsync each directory once: makes the links :meth:`Placer.place` made there durable."""
    for directory in directories:
        fsync_dir(directory)


def place(spooled: str | Path, root: Path, structure: Sequence[str], filename: str, header: Header) -> Placed:
    """One-off :meth:`Placer.place` (fsyncs ``spooled`` first)."""
    return Placer(root, structure, filename).place(spooled, header)
