"""Placement: a durable spool file gets its final name in the output tree, atomically, never
overwriting another instance.

A :class:`Placer` is shared by the receive threads. It remembers the directories it has made
and checked (resolved inside the output directory), so the per-instance work is one
``link`` and one ``unlink``, and one directory ``fsync`` (shared by a batch of files when the
caller asks for it with :func:`sync_dirs`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from asyncdicom.write.paths import confine, render, with_suffix_number
from asyncdicom.write.spool import Header, fsync_dir, read_header


@dataclass(frozen=True, slots=True)
class Placed:
    """Where an instance ended: ``stored``, ``duplicate`` (same instance already there) or ``renamed``."""

    path: Path
    state: str
    size: int


def _same_instance(path: Path, sop_uid: str) -> bool:
    try:
        return read_header(path, ()).sop_instance_uid == sop_uid
    except ValueError:
        return False


class Placer:
    """Renders paths from headers and links spool files there (thread-safe)."""

    def __init__(self, root: Path, structure: Sequence[str], filename: str) -> None:
        self.root = root.resolve()
        self.structure = tuple(structure)
        self.filename = filename
        self._dirs: dict[PurePosixPath, Path] = {}
        self._lock = threading.Lock()

    @property
    def keywords(self) -> tuple[str, ...]:
        """The attributes paths are rendered from."""
        return (*self.structure, self.filename)

    def _directory(self, relative: PurePosixPath) -> Path:
        """The confined, existing directory for ``relative`` (made and checked once per run)."""
        with self._lock:
            known = self._dirs.get(relative)
        if known is not None:
            return known
        directory = confine(self.root, relative) if relative.parts else self.root
        made = [parent for parent in (directory, *directory.parents) if not parent.exists()]
        directory.mkdir(parents=True, exist_ok=True)
        for new in made:  # a new directory's entry in its parent must be durable too
            fsync_dir(new.parent)
        with self._lock:
            self._dirs[relative] = directory
        return directory

    def place(self, spooled: Path, header: Header, *, synced: bool = False, sync_dir: bool = True) -> Placed:
        """Link ``spooled`` to its rendered path and remove it from the spool.

        ``synced`` says the caller already fsynced the file; otherwise it is fsynced here, so a
        file never has a name in the output tree before its bytes are on disk. Without
        ``sync_dir`` the caller must :func:`sync_dirs` the new path's directory before counting
        the instance as stored (so one fsync serves many files).
        """
        relative = render(self.structure, self.filename, header.attrs)
        if not synced:
            fd = os.open(spooled, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        size = os.stat(spooled).st_size
        directory = self._directory(relative.parent)
        target = directory / relative.name
        sop_uid = header.sop_instance_uid
        candidate, number, remade = target, 0, False
        while True:
            try:
                # link() fails if the name exists: no window in which another writer's file is replaced
                os.link(spooled, candidate)
            except FileExistsError:
                if _same_instance(candidate, sop_uid):
                    os.unlink(spooled)
                    return Placed(candidate, "duplicate", size)
                number += 1
                candidate = with_suffix_number(target, number)
                continue
            except FileNotFoundError:
                if remade:
                    raise
                with self._lock:  # the directory went away during the run: make it again
                    self._dirs.pop(relative.parent, None)
                directory, remade = self._directory(relative.parent), True
                target = directory / relative.name
                candidate = with_suffix_number(target, number) if number else target
                continue
            os.unlink(spooled)
            if sync_dir:
                fsync_dir(directory)
            return Placed(candidate, "stored" if number == 0 else "renamed", size)


def sync_dirs(directories: Iterable[Path]) -> None:
    """fsync each directory once: makes the links :meth:`Placer.place` made there durable."""
    for directory in directories:
        fsync_dir(directory)


def place(spooled: Path, root: Path, structure: Sequence[str], filename: str, header: Header) -> Placed:
    """One-off :meth:`Placer.place` (fsyncs ``spooled`` first)."""
    return Placer(root, structure, filename).place(spooled, header)
