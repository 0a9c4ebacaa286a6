"""Crash-safe writes: every file and folder a run leaves is written under a temporary name beside its target, flushed
to disk and renamed into place, so a killed run leaves the old version or the new one, never half of either.

Temporary names end with `.rlaifv-tmp`; `remove_temporary_files` sweeps what a killed writer left behind (call it
only while no writer runs, e.g. holding the run's lock). Files and folders are created with the process's umask, like
any other file the user creates.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


TEMPORARY_SUFFIX = ".rlaifv-tmp"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh temporary name in the folder of `path` (hidden, unique, swept by `remove_temporary_files`)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


@contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = False) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces `path` when the block ends without error, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = temporary_sibling(path)
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask
    try:
        with os.fdopen(descriptor, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(scratch, path)
        _fsync_directory(path.parent)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_write(path) as stream:
        stream.write(text)


def atomic_write_json(path: str | os.PathLike, payload: Any, **dump_kwargs: Any) -> None:
    """Write `payload` as JSON atomically."""
    with atomic_write(path) as stream:
        json.dump(payload, stream, **dump_kwargs)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; it replaces `path` when the block ends without error, else it is
    removed. Readers see the old folder or the complete new one (the old one is moved aside, then deleted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = temporary_sibling(path)
    os.mkdir(scratch, 0o777)  # 0o777 & ~umask
    try:
        yield scratch
        move_into_place(scratch, path)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def move_into_place(scratch: str | os.PathLike, path: str | os.PathLike) -> None:
    """Flush a finished folder to disk and rename it to `path`, replacing what was there.

    Use it for a folder that other processes filled under a temporary name known to all of them (ending with
    `TEMPORARY_SUFFIX`, so that a killed run's leftover is swept); `atomic_directory` does this for one process.
    """
    scratch, path = Path(scratch), Path(path)
    follow_umask(scratch)
    for folder, _, files in os.walk(scratch):
        for name in files:
            _fsync_file(Path(folder, name))
    if path.exists():
        previous = temporary_sibling(path)
        os.replace(path, previous)
        os.replace(scratch, path)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(scratch, path)
    _fsync_directory(path.parent)


def follow_umask(root: str | os.PathLike) -> None:
    """Give `root` and everything under it the modes the process's umask gives new files and folders (some writers,
    such as `save_pretrained`'s safetensors files, create them readable by their owner only)."""
    umask = current_umask()
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o777 & ~umask)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~umask)


def follow_umask_files(folder: str | os.PathLike, pattern: str) -> None:
    """Give the files matching `pattern` in `folder` (not below it) the mode the process's umask gives new files."""
    mode = 0o666 & ~current_umask()
    for path in Path(folder).glob(pattern):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def current_umask() -> int:
    """The process's umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def remove_temporary_files(root: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders that killed writers left under `root`; returns what was removed."""
    removed = []
    for folder, subfolders, files in os.walk(root):
        for name in [*files, *subfolders]:
            if name.endswith(TEMPORARY_SUFFIX):
                leftover = Path(folder, name)
                shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
                removed.append(leftover)
        subfolders[:] = [name for name in subfolders if not name.endswith(TEMPORARY_SUFFIX)]
    return removed


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(path: Path) -> None:
    """Make a rename in `path` durable (where the platform allows opening folders)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
