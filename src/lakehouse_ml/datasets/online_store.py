"""The online feature store as a Kedro dataset: ``load`` its published state, ``save`` a publish."""

from __future__ import annotations

import logging
from typing import Any

from kedro.io.core import AbstractDataset

from lakehouse_ml.online.store import OnlineStore, open_online_store

logger = logging.getLogger(__name__)


class OnlineStoreDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """An online store configured by ``store`` (see :func:`lakehouse_ml.online.store.open_online_store`).

    ``load`` returns ``{"store": <where>, "tables": {table: {source_version, published_at, rows,
    contract_hash, as_of, key_columns, row_hashes}}}`` for every published table, ``row_hashes``
    being a frame of ``_key`` and ``_row_hash`` (what a publish compares against).

    ``save`` takes ``{"tables": {table: {"rows": DataFrame, "deleted": [keys], "source_version",
    "key_columns", "contract_hash", "as_of"}}}``: per table, upserts the rows (recording the
    source version, contract hash and as_of) and deletes the keys. A table with no rows, no
    deletions and an unchanged source version and contract hash is not written at all.
    """

    def __init__(self, *, store: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self._config = dict(store)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        # The store's type and location only: a server-backed store's options may hold secrets.
        return {"type": self._config.get("type"), "path": self._config.get("path")}

    def _open(self) -> OnlineStore:
        return open_online_store(self._config)

    def load(self) -> dict[str, Any]:
        """The published state of every table, with the stored row hashes."""
        store = self._open()
        try:
            tables = {}
            for table in store.tables():
                tables[table] = {**store.table_state(table), "row_hashes": store.row_hashes(table)}
            return {"store": store.describe(), "tables": tables}
        finally:
            store.close()

    def save(self, data: dict[str, Any]) -> None:
        """Apply a publish: upserts, then deletions, table by table."""
        store = self._open()
        try:
            for table, update in (data.get("tables") or {}).items():
                written = store.upsert(
                    table,
                    update["rows"],
                    source_version=update["source_version"],
                    key_columns=update.get("key_columns"),
                    contract_hash=update.get("contract_hash"),
                    as_of=update.get("as_of"),
                )
                deleted = store.delete(table, list(update.get("deleted") or []))
                if written or deleted:
                    logger.info("online store %s: %s: %d rows upserted, %d deleted", store.describe(), table, written, deleted)
        finally:
            store.close()
