"""A Kedro hook plugin for crash tests: SIGKILL the run right after its N-th committing save.

Loaded only by the crash harness (it puts a ``kedro.hooks`` entry point on the child's path), so
the real ``kedro run`` CLI is what crashes. Counting is across the commands of one scenario: the
count file lists every save that added a Delta commit, one dataset name per line.

One save of the feature tables writes each table in turn (``FeatureTablesDataset.save_table``),
so each table's write counts as its own save, ``feature_tables@spark[<table>]``: the sweep also
kills between two tables' MERGEs. Likewise a save that appends before it MERGEs (silver's new
events, ``merge_insert_column``) counts its append as ``<dataset>[append]``: the sweep also kills
between the two.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from kedro.framework.hooks import hook_impl

from lakehouse_ml.datasets import FeatureTablesDataset, SparkDeltaDataset


def _commits(root: Path) -> int:
    return sum(1 for _ in root.glob("**/_delta_log/*.json"))


class CrashAfterCommit:
    """Kill the process after the ``CRASH_AFTER_COMMIT``-th save that committed (0: never)."""

    def __init__(self) -> None:
        self._target = int(os.environ.get("CRASH_AFTER_COMMIT", "0"))
        self._log = Path(os.environ["CRASH_COUNT_FILE"])
        self._root = Path(os.environ["LAKEHOUSE_ML_ROOT"]) / "data" / "lakehouse"
        self._before = 0

        self._dataset = ""
        save_table = FeatureTablesDataset.save_table

        def counted(dataset: FeatureTablesDataset, name: str, update: object) -> None:
            save_table(dataset, name, update)
            self._saved(f"{self._dataset}[{name}]")

        FeatureTablesDataset.save_table = counted
        write = SparkDeltaDataset._write

        def written(dataset: SparkDeltaDataset, data: object, mode: str, **options: object) -> None:
            write(dataset, data, mode, **options)
            # Any other write is its save's only commit, counted under the save's own name.
            self._saved(f"{self._dataset}[append]" if mode == "append" else self._dataset)

        SparkDeltaDataset._write = written

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data: object, node: object) -> None:
        self._before, self._dataset = _commits(self._root), dataset_name

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: object, node: object) -> None:
        self._saved(dataset_name)

    def _saved(self, name: str) -> None:
        """Record a save that committed (and kill the run if it is the target)."""
        commits = _commits(self._root)
        if commits == self._before:
            return
        self._before = commits
        with self._log.open("a") as log:
            log.write(name + "\n")
        if self._target and len(self._log.read_text().splitlines()) == self._target:
            os.kill(os.getpid(), signal.SIGKILL)


hooks = CrashAfterCommit()
