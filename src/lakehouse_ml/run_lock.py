"""One writing run per lakehouse catalog: an exclusive lock held while a ``kedro run`` runs.

Delta's optimistic concurrency keeps each table consistent, but not a run that spans many tables:
two ingests a second apart both read the same processed-delivery log and both count the same rows
as inserted, and a conflicting commit only says "Failed to commit transaction". So a run takes
the catalog's lock before its first node and a second run is refused at once, naming the run
that holds it. The lock is an OS file lock (``flock``): it is released when its process ends,
however it ends, so a killed run never leaves a stale lock behind. It guards runs on this
machine's file system; tables on object storage need the engine's or the platform's own
concurrency control.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

LOCK_FILE = "_run.lock"


class LakehouseBusy(RuntimeError):
    """Another run holds the lakehouse catalog's lock."""


def describe_holder(holder: dict[str, Any]) -> str:
    """One line naming a lock holder: what it runs, its process, host and start time."""
    if not holder:
        return "a run that has not recorded itself yet"
    return (
        f"kedro run of {holder.get('pipelines', '?')} (env {holder.get('env', '?')}, pid {holder.get('pid', '?')} "
        f"on {holder.get('host', '?')}, started {holder.get('started_at', '?')})"
    )


class RunLock:
    """The exclusive lock of one lakehouse catalog folder (``<lakehouse_root>/<catalog>/_run.lock``)."""

    def __init__(self, catalog_dir: str | Path) -> None:
        self.path = Path(catalog_dir) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        """What the current (or last) holder recorded about itself; ``{}`` if nothing readable."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self, holder: dict[str, Any]) -> None:
        """Take the lock without waiting and record ``holder`` in it; raise :class:`LakehouseBusy` if taken."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LakehouseBusy(
                f"another run is writing the lakehouse '{self.path.parent}': {describe_holder(self.holder())}. "
                "Wait for it to finish (or stop it) and run again; a run that was killed releases it by itself."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder, default=str).encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the record stays, as the last holder, for diagnosis)."""
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
