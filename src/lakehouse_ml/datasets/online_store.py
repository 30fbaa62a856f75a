"""The online feature store as a Kedro dataset: ``load`` its published state, ``save`` a publish."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from kedro.io.core import AbstractDataset

from lakehouse_ml.online.store import OnlineStore, open_online_store

logger = logging.getLogger(__name__)


class OnlineStoreDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """An online store configured by ``store`` (see :func:`lakehouse_ml.online.store.open_online_store`).

    ``load`` returns ``{"store": <where>, "tables": {table: {source_version, published_at, rows,
    contract_hash, as_of, key_columns, row_hashes}}}`` for every published table, ``row_hashes``
    being a frame of ``_key`` and ``_row_hash`` (what a publish compares against).

    ``save`` takes ``{"tables": {table: {"rows": DataFrame, "deleted": [keys], "source_version",
    "key_columns", "contract_hash", "as_of"}}}`` and applies it as one publish
    (:meth:`~lakehouse_ml.online.store.OnlineStore.publish`: readers see all tables' upserts and
    deletions or none): per table the rows are upserted (recording the source version, contract
    hash and as_of) and the keys deleted. A table with no rows, no deletions and an unchanged
    source version and contract hash is not written at all.

    ``credentials`` (a catalog ``credentials:`` entry such as ``{password: ...}`` or ``{username,
    password}``) are merged into the store's options, so no password is written in the catalog.
    """

    def __init__(
        self,
        *,
        store: dict[str, Any],
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._config = {**dict(store), **dict(credentials or {})}
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        # The store's type and location only: a server-backed store's options hold secrets.
        return {
            "type": self._config.get("type"),
            "path": self._config.get("path"),
            "url": _without_userinfo(self._config.get("url")),
        }

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
        """Apply a publish: every table's upserts and deletions, seen by readers all at once."""
        store = self._open()
        try:
            counts = store.publish(dict(data.get("tables") or {}))
            for table, count in counts.items():
                if count["upserted"] or count["deleted"]:
                    logger.info(
                        "online store %s: %s: %d rows upserted, %d deleted",
                        store.describe(),
                        table,
                        count["upserted"],
                        count["deleted"],
                    )
        finally:
            store.close()


def _without_userinfo(url: Any) -> str | None:
    """A URL without any user or password in it (for ``_describe``)."""
    if not url:
        return None
    parts = urlsplit(str(url))
    return (
        parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
        if parts.hostname
        else None
    )
