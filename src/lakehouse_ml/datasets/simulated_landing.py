"""The simulator's landing files: a partitioned folder it rewrites whole, and never a user's.

The simulator replaces its whole feed on every run (no stale files from older settings). An
environment that points ``landing_root`` at real deliveries must not lose them to that: a folder
holding any file the simulator would not have written is refused, naming it. Saving no
partitions writes nothing (``simulate.enabled: false``), so the loop runs on delivered files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import fsspec
from kedro.io.core import DatasetError, get_protocol_and_path
from kedro_datasets.partitions import PartitionedDataset


class SimulatedLandingDataset(PartitionedDataset):
    """A source's simulated daily files, ``<path>/YYYY-MM-DD/<source><suffix>`` (source = the
    folder's name), written by replacing the folder, which must hold only files of that shape."""

    def __init__(self, *, path: str, filename_suffix: str = "", **kwargs: Any) -> None:
        super().__init__(path=path, filename_suffix=filename_suffix, overwrite=True, **kwargs)
        protocol, root = get_protocol_and_path(path)
        self._fs, self._local, self._root = fsspec.filesystem(protocol), protocol == "file", root.rstrip("/")
        source = re.escape(self._root.rsplit("/", 1)[-1])
        self._simulated = re.compile(rf"^\d{{4}}-\d{{2}}-\d{{2}}/{source}{re.escape(filename_suffix)}$")

    def save(self, data: dict[str, Any]) -> None:
        """Replace the folder with ``data``'s files; no partitions: leave it as it is."""
        if not data:
            return
        foreign = [relative for relative in self._files() if not self._simulated.match(relative)]
        if foreign:
            raise DatasetError(
                f"simulate: '{self._root}' holds files the simulator did not write (e.g. {foreign[:3]}), and "
                f"simulating would replace the folder: point globals.landing_root of this environment "
                f"elsewhere, or set simulate.enabled: false to run the loop on these deliveries"
            )
        super().save(data)

    def _files(self) -> list[str]:
        # Resolved when saving, as the parent resolves a relative path; find() answers absolute paths.
        root = Path(self._root).absolute().as_posix() if self._local else self._root
        if not self._fs.exists(root):
            return []
        return sorted(path[len(root) + 1 :] for path in self._fs.find(root))
