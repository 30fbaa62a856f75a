"""The online feature store: latest feature rows per customer for request-time lookups.

``OnlineStore`` / ``SQLiteOnlineStore`` / ``open_online_store`` hold and serve the rows the
``publish_online`` pipeline materialises from the Delta feature tables (``RedisOnlineStore``, in
``lakehouse_ml.online.redis_store``, is imported only when configured); ``OnlineFeatureLookup``
turns them into model input vectors with the training set's definitions.
"""

from lakehouse_ml.online.store import OnlineStore, OnlineStoreError, SQLiteOnlineStore, open_online_store
from lakehouse_ml.online.vectors import OnlineFeatureLookup

__all__ = ["OnlineFeatureLookup", "OnlineStore", "OnlineStoreError", "SQLiteOnlineStore", "open_online_store"]
