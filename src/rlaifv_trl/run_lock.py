"""One run per output folder: an exclusive lock held while a run writes there.

The lock is an OS file lock (`filelock`, the library `huggingface_hub` and `datasets` use for their caches), so the
operating system releases it when its process dies: a killed run leaves no lock behind, and the next run takes it
over at once. A side file records who holds it, so a refused run can say which process to wait for.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from .atomic_io import atomic_write_json


logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
OWNER_FILE = ".lock.owner.json"


class RunLockedError(RuntimeError):
    """Another process is running in the same output folder."""


class RunLock:
    """Exclusive use of `folder` by this process: `with RunLock(folder): ...`.

    Raises `RunLockedError` at once, naming the holder, when another live process holds it.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._lock = FileLock(str(self.folder / LOCK_FILE))

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        previous = self._owner()
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = _describe(previous) if previous else "another process"
            raise RunLockedError(
                f"{self.folder} is in use by {holder}. Wait for that run to end, or use another output_dir."
            ) from None
        if previous:
            logger.warning(
                "Taking over %s from %s, which ended without releasing it", self.folder, _describe(previous)
            )
        atomic_write_json(
            self.folder / OWNER_FILE, {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        )

    def release(self) -> None:
        (self.folder / OWNER_FILE).unlink(missing_ok=True)
        self._lock.release()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def _owner(self) -> dict | None:
        try:
            return json.loads((self.folder / OWNER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def _describe(owner: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
    return f"process {owner.get('pid')} on {owner.get('host')} (since {since})"
