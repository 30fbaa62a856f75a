"""The Redis online store against real servers: credentials from the catalog, isolated namespaces,
clear errors for a server that is down or a wrong password (never showing it), and a connection
lost in the middle of a publish leaving the previous publish served whole."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

import pandas as pd
import pytest
import redis
import yaml
from kedro.io.core import DatasetError

from lakehouse_ml.datasets import OnlineStoreDataset
from lakehouse_ml.online.store import OnlineStoreError, open_online_store
from tests.services.servers import free_port, start_redis

pytestmark = pytest.mark.services

EXEC = b"*1\r\n$4\r\nEXEC\r\n"  # the EXEC command as redis-py sends it (RESP array of one bulk string)


def _config(server, **changes) -> dict:
    return {
        "type": "redis",
        "url": server.url,
        "password": server.password,
        "namespace": f"test:{uuid.uuid4().hex}",
        **changes,
    }


def _rows(version: int, keys: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"customer_id": keys, "feature_ts": pd.Timestamp("2026-03-01", tz="UTC"), "orders_30d": float(version)}
    )


def _update(version: int, keys: list[str], deleted: list[str] | None = None) -> dict:
    return {
        "rows": _rows(version, keys),
        "deleted": deleted or [],
        "source_version": version,
        "key_columns": ["customer_id"],
    }


def test_the_catalog_dataset_publishes_with_its_credentials_and_never_shows_them(redis_server, caplog):
    config = _config(redis_server)
    password = config.pop("password")
    dataset = OnlineStoreDataset(store=config, credentials={"password": password})
    assert password not in repr(dataset) and password not in str(dataset._describe())
    with caplog.at_level(logging.INFO, logger="lakehouse_ml.datasets.online_store"):
        dataset.save({"tables": {"a": _update(1, ["c1", "c2"]), "b": _update(2, ["c1"], deleted=["c9"])}})
    assert f"online store {redis_server.url}: a: 2 rows upserted, 0 deleted" in caplog.text
    assert password not in caplog.text
    loaded = dataset.load()
    assert loaded["store"] == redis_server.url and sorted(loaded["tables"]) == ["a", "b"]
    assert loaded["tables"]["b"]["source_version"] == 2 and loaded["tables"]["b"]["rows"] == 1
    assert sorted(loaded["tables"]["a"]["row_hashes"]["_key"]) == ["c1", "c2"]
    # Without the credentials entry the server refuses, and the error says where the password goes.
    with pytest.raises(DatasetError, match=r"authentication failed .*credentials.yml `online_store`") as refused:
        OnlineStoreDataset(store=config).load()
    assert redis_server.url in str(refused.value)


def test_two_namespaces_on_one_server_never_mix(redis_server):
    dev = open_online_store(_config(redis_server))
    prod = open_online_store(_config(redis_server))
    try:
        dev.publish({"t": _update(1, ["c1"])})
        assert prod.tables() == [] and prod.get("t", ["c1"]) == {} and prod.table_state("t") is None
        assert dev.get("t", ["c1"])["c1"]["orders_30d"] == 1.0
    finally:
        dev.close()
        prod.close()


def test_a_server_that_is_down_is_named_with_the_setting_to_check(tmp_path):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(OnlineStoreError) as down:
        open_online_store(
            {"type": "redis", "url": f"redis://127.0.0.1:{port}/0", "password": "s3cret-pw", "socket_timeout": 1}
        )
    message = str(down.value)
    assert time.monotonic() - started < 10
    assert f"online store redis://127.0.0.1:{port}/0: cannot reach the server" in message
    assert "serving.online_store" in message and "store.url" in message and "s3cret-pw" not in message


def test_a_server_that_stops_later_gives_the_same_clear_error(tmp_path):
    server = start_redis(tmp_path / "redis")
    store = open_online_store(_config(server, socket_timeout=1, retries=0))
    try:
        store.publish({"t": _update(1, ["c1"])})
        server.stop()
        with pytest.raises(
            OnlineStoreError, match=rf"online store {server.url}: cannot reach the server while reading rows"
        ):
            store.read({"t": ["c1"]})
    finally:
        store.close()
        server.stop()


def test_a_wrong_password_names_the_credentials_setting(redis_server):
    with pytest.raises(OnlineStoreError) as wrong:
        open_online_store(_config(redis_server, password="not-the-password"))
    message = str(wrong.value)
    assert f"online store {redis_server.url}: authentication failed" in message
    assert "LAKEHOUSE_ML_ONLINE_STORE_PASSWORD" in message and "not-the-password" not in message


def test_a_password_in_the_url_is_refused_without_being_shown(redis_server):
    url = f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(OnlineStoreError, match="a password in the url is refused") as refused:
        open_online_store({"type": "redis", "url": url})
    assert redis_server.password not in str(refused.value)
    with pytest.raises(OnlineStoreError, match="needs a 'url'"):
        open_online_store({"type": "redis"})


class _CuttingProxy:
    """A TCP proxy to Redis that, once armed, forwards a client's bytes up to (not including) the
    EXEC of a transaction and then cuts that connection: the server has MULTI and every queued
    write, and loses the client before EXEC."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        pending = b""
        try:
            while data := source.recv(65536):
                # The publish's transaction (its first bytes carry MULTI and HSET); reads pass.
                if from_client and self.armed.is_set() and (pending or b"HSET" in data):
                    pending += data
                    if (at := pending.find(EXEC)) >= 0:
                        sink.sendall(pending[:at])
                        time.sleep(0.2)  # the server has queued every write
                        self.armed.clear()
                        self.cut.set()
                        raise OSError("cut before EXEC")
                    continue
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


def test_a_connection_lost_before_exec_leaves_the_previous_publish_served_whole(tmp_path):
    server = start_redis(tmp_path / "redis")
    proxy = _CuttingProxy(server.port)
    config = _config(server, url=f"redis://127.0.0.1:{proxy.port}/0", retries=0)
    store = open_online_store(config)
    reader = open_online_store({**config, "url": server.url})  # straight to the server
    keys = [f"c{i:03d}" for i in range(300)]
    try:
        store.publish({"a": _update(1, keys), "b": _update(1, keys)})
        proxy.armed.set()
        with pytest.raises(OnlineStoreError, match="cannot reach the server while publishing"):
            store.publish({"a": _update(2, keys[:200]), "b": _update(2, keys[100:], deleted=keys[:100])})
        assert proxy.cut.is_set()
        # The server dropped the queued transaction with the connection: v1 everywhere, all keys.
        rows = reader.get_many({"a": keys, "b": keys})
        assert {r["orders_30d"] for r in rows["a"].values()} == {1.0} and len(rows["a"]) == 300
        assert {r["orders_30d"] for r in rows["b"].values()} == {1.0} and len(rows["b"]) == 300
        assert reader.table_state("a")["source_version"] == 1 and reader.table_state("b")["rows"] == 300
        raw = redis.Redis(port=server.port, password=server.password)
        assert raw.exists(f"{config['namespace']}:publish") == 0  # the lost publish's lock was released
        raw.close()
        # The same store publishes again on a new connection.
        store.publish({"a": _update(3, keys), "b": _update(3, keys)})
        assert {r["orders_30d"] for r in reader.get("b", keys).values()} == {3.0}
    finally:
        store.close()
        reader.close()
        proxy.close()
        server.stop()


def test_sqlite_users_never_import_redis(tmp_path):
    code = (
        "import sys; from lakehouse_ml.online import open_online_store; "
        f"s = open_online_store({{'type': 'sqlite', 'path': {str(tmp_path / 'x.db')!r}}}); s.read({{'t': ['a']}}); s.close(); "
        "print('redis' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_team_environment_publishes_to_and_serves_from_redis(redis_server, tmp_path, monkeypatch):
    """conf/team as shipped: the catalog's online store and the service's are the same Redis keys,
    the password coming from credentials.yml (catalog) and the environment (service)."""
    from kedro.io import DataCatalog

    from lakehouse_ml.serving.config import ONLINE_STORE_PASSWORD_VARIABLE, TOKEN_VARIABLE, load_settings
    from tests.helpers import PROJECT_ROOT, project_config

    conf = tmp_path / "conf"
    shutil.copytree(PROJECT_ROOT / "conf", conf, ignore=shutil.ignore_patterns("credentials*"))
    namespace = f"test:{uuid.uuid4().hex}"
    # What conf/team/globals.yml provides (kept by the team) and the git-ignored credentials.
    globals_file = conf / "team" / "globals.yml"
    team_globals = yaml.safe_load(globals_file.read_text()) if globals_file.exists() else {}
    globals_file.write_text(
        yaml.safe_dump({**team_globals, "online_store_url": redis_server.url, "online_store_namespace": namespace})
    )
    (conf / "team" / "credentials.yml").write_text(
        f"online_store:\n  password: {redis_server.password}\n"
        "optuna_storage:\n  username: optuna\n  password: not-used-here\n"  # the team catalog's other entry
    )
    config = project_config("team", conf_source=conf)
    catalog = DataCatalog.from_config(config["catalog"], config["credentials"])
    assert redis_server.password not in repr(catalog)
    catalog.save("online_store", {"tables": {"a": _update(4, ["c1", "c2"], deleted=["c0"])}})
    assert catalog.load("online_store_published")["tables"]["a"]["source_version"] == 4

    (conf / "team" / "credentials.yml").unlink()
    monkeypatch.setenv(TOKEN_VARIABLE, "t")
    monkeypatch.setenv(ONLINE_STORE_PASSWORD_VARIABLE, redis_server.password)
    settings = load_settings("team", conf)
    assert settings.online_store["namespace"] == namespace and settings.online_store["url"] == redis_server.url
    store = open_online_store(settings.online_store)
    try:
        assert store.read({"a": ["c2"]})["a"].column("orders_30d").to_pylist() == [4.0]
    finally:
        store.close()
