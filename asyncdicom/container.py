"""``scripts/container-run CONFIG [ARGS]``: run asyncdicom in its container image with podman or
docker, binding exactly the folders the config names, as the ancestor's run-docker-extraction.sh did.

Every folder is mounted at the same absolute path inside the container, so the config's paths
(relative ones start at its folder, which becomes the working directory) mean the same inside
and out. Inputs (the config, the CSV, the script, the lookup table) are mounted read-only; what
asyncdicom writes (the output tree, the library or request CSV, the ledger, the quarantine)
read-write, made first so they belong to the user. For C-MOVE, ``local.port`` is published so
that the PACS can connect back. Files are written as the calling user.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncdicom.config import Config, load_config
from asyncdicom.errors import AsyncDicomError, ConfigError
from asyncdicom.retrieve import quarantine_dir, spool_dir

IMAGE = "localhost/asyncdicom:latest"


@dataclass(frozen=True, slots=True)
class Mount:
    """A host folder bound at the same path in the container."""

    path: Path
    writable: bool

    def option(self) -> str:
        return f"{self.path}:{self.path}:{'rw' if self.writable else 'ro'},Z"


def mounts(config: Config) -> list[Mount]:
    """The folders the container needs, each once: read-only inputs, writable outputs; a folder
    inside another one with the same access is covered by it."""
    inputs = [config.source.parent]
    inputs += [path.parent for path in (config.request.elements_batch_file,) if path is not None]
    section = config.anonymization
    inputs += [path.parent for path in (section.script, section.lookup_table) if section.enabled and path is not None]
    outputs = [config.output.ledger_file.parent]
    if config.output.directory is not None:
        outputs += [config.output.directory, spool_dir(config).parent]
        if section.enabled:
            outputs.append(section.quarantine_directory or quarantine_dir(config.output.directory))
    if config.output.library_file is not None:
        outputs.append(config.output.library_file.parent)
    wanted = [Mount(path, False) for path in inputs] + [Mount(path, True) for path in outputs]
    kept: list[Mount] = []
    for mount in sorted(set(wanted), key=lambda m: (len(m.path.parts), not m.writable, str(m.path))):
        if any(mount.path.is_relative_to(outer.path) and outer.writable >= mount.writable for outer in kept):
            continue
        kept.append(mount)
    return kept


def command(
    config_path: Path, args: Sequence[str], engine: str, image: str = IMAGE, user: tuple[int, int] | None = None
) -> list[str]:
    """The ``podman run`` (or ``docker run``) command line for ``asyncdicom ARGS… CONFIG``."""
    config = load_config(config_path)
    uid, gid = user if user is not None else (os.getuid(), os.getgid())
    line = [engine, "run", "--rm", "--init"]
    if sys.stdin.isatty() and sys.stderr.isatty():
        line.append("-it")
    line += ["--user", f"{uid}:{gid}"]
    if Path(engine).name == "podman":
        line.append("--userns=keep-id")
    for mount in mounts(config):
        line += ["-v", mount.option()]
    line += ["-w", str(config.source.parent)]
    if config.request.type == "c-move":
        port = config.local.port
        address = f"{config.local.bind_address}:" if config.local.bind_address else ""
        line += ["-p", f"{address}{port}:{port}"]
    command_name, *rest = args or ["run"]
    return [*line, image, command_name, str(config.source), *rest]


def main(argv: Sequence[str]) -> int:
    """``container-run [--engine podman|docker] [--image NAME] [--print] CONFIG [COMMAND [ARGS…]]``."""
    engine = os.environ.get("ASYNCDICOM_CONTAINER_ENGINE") or shutil.which("podman") or shutil.which("docker")
    image, dry_run, rest = IMAGE, False, list(argv)
    while rest and rest[0].startswith("--"):
        option = rest.pop(0)
        if option == "--print":
            dry_run = True
        elif option in ("--engine", "--image") and rest:
            value = rest.pop(0)
            engine, image = (value, image) if option == "--engine" else (engine, value)
        else:
            print(f"container-run: unknown option {option}", file=sys.stderr)
            return 2
    if not rest:
        print(main.__doc__, file=sys.stderr)
        return 2
    try:
        if not engine:
            raise ConfigError("", "neither podman nor docker is installed; install one, or give --engine PATH")
        for directory in (m.path for m in mounts(load_config(Path(rest[0]))) if m.writable):
            directory.mkdir(parents=True, exist_ok=True)  # made by the user, not by the container
        line = command(Path(rest[0]), rest[1:], engine, image)
    except AsyncDicomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    if dry_run:
        print(" ".join(line))
        return 0
    os.execvp(line[0], line)
    return 1  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
