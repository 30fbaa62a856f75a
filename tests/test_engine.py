"""The Spark engine: configuration checks, and each mode started for real.

``ENGINE`` is a process singleton that the session-wide ``spark`` fixture owns, so every test
that starts or stops an engine does it in a child process (``sys.executable`` on a small script)
or on a fresh ``SparkEngine()`` whose start fails before touching any session.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lakehouse_ml.engine import (
    MODES,
    EngineConfig,
    EngineError,
    SparkEngine,
    check_reachable,
    classic_jar_conf,
    delta_package,
    java_executable,
    missing_classic_jars,
)
from tests.helpers import PROJECT_ROOT, project_config


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without the fixture's Spark Connect URL, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "SPARK_REMOTE"}
    env.update(extra)
    return env


def run_child(tmp_path: Path, code: str, timeout: float = 60, **env: str) -> tuple[dict, float]:
    """Run ``code`` in a fresh interpreter; return the JSON it prints last and the wall time."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"child exited with {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1]), elapsed


# ---------------------------------------------------------------------------- configuration


def test_from_dict_rejects_an_unknown_mode_listing_the_modes():
    with pytest.raises(EngineError) as error:
        EngineConfig.from_dict({"mode": "local"})
    message = str(error.value)
    assert "mode must be one of embedded, remote, classic" in message
    assert "'local'" in message
    assert MODES == ("embedded", "remote", "classic")


def test_from_dict_reads_every_section():
    config = EngineConfig.from_dict(
        {
            "mode": "classic",
            "app_name": "x",
            "spark_conf": {"spark.sql.shuffle.partitions": 4, "spark.sql.session.timeZone": "UTC"},
            "remote": {"url": "sc://host:15002"},
            "embedded": {"host": "0.0.0.0", "env": {"SAIL_X": 1}},
            "classic": {
                "master": "local[2]",
                "jars": ["/a.jar", "/b.jar"],
                "delta_package": "io.delta:delta-spark_4.2_2.13:4.4.0",
                "ivy_dir": "/tmp/ivy",
            },
        }
    )
    assert config == EngineConfig(
        mode="classic",
        app_name="x",
        spark_conf={"spark.sql.shuffle.partitions": "4", "spark.sql.session.timeZone": "UTC"},
        remote_url="sc://host:15002",
        embedded_host="0.0.0.0",
        embedded_env={"SAIL_X": "1"},
        classic_master="local[2]",
        classic_jars=("/a.jar", "/b.jar"),
        classic_delta_package="io.delta:delta-spark_4.2_2.13:4.4.0",
        classic_ivy_dir="/tmp/ivy",
    )


def test_from_dict_defaults_and_nulls():
    # spark.yml may leave sections empty (``remote: {url: null}``, ``jars: []``, ``env: {}``).
    config = EngineConfig.from_dict({"remote": {"url": None}, "embedded": None, "spark_conf": None})
    assert config == EngineConfig()
    assert config.mode == "embedded" and config.embedded_host == "127.0.0.1"


def test_project_spark_yml_selects_the_embedded_engine():
    config = EngineConfig.from_dict(project_config("local")["spark"])
    assert config.mode == "embedded"
    assert config.spark_conf == {"spark.sql.session.timeZone": "UTC"}


def test_an_environments_spark_yml_overrides_single_keys_and_keeps_the_rest(tmp_path):
    conf = tmp_path / "conf"
    (conf / "base").mkdir(parents=True)
    (conf / "bigger").mkdir()
    (conf / "base" / "spark.yml").write_text((PROJECT_ROOT / "conf" / "base" / "spark.yml").read_text())
    (conf / "bigger" / "spark.yml").write_text(
        "embedded:\n  env:\n    SAIL_RUNTIME__MEMORY_POOL__TYPE: fair\n"
        "    SAIL_RUNTIME__MEMORY_POOL__FAIR__MAX_SIZE: '8000000000'\n"
    )
    config = EngineConfig.from_dict(project_config("bigger", conf_source=conf)["spark"])
    assert config.embedded_env["SAIL_RUNTIME__MEMORY_POOL__FAIR__MAX_SIZE"] == "8000000000"
    # Not dropped by the override: the base's other variables and the rest of the file.
    assert config.embedded_env["RUST_LOG"] == "warn"
    assert config.mode == "embedded" and config.spark_conf == {"spark.sql.session.timeZone": "UTC"}


def test_session_of_an_engine_that_is_not_running_raises():
    engine = SparkEngine()
    assert not engine.running and engine.url is None
    with pytest.raises(EngineError, match="not running"):
        _ = engine.session


def test_remote_mode_without_a_url_says_what_to_set(monkeypatch):
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    engine = SparkEngine()
    with pytest.raises(EngineError) as error:
        engine.start(EngineConfig(mode="remote"))
    message = str(error.value)
    assert "SPARK_REMOTE" in message and "remote.url" in message
    assert not engine.running
    assert "SPARK_REMOTE" not in os.environ


def test_remote_mode_with_nothing_listening_fails_at_once_naming_the_url(monkeypatch):
    """The Connect client alone would retry with backoff for minutes before its first query failed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"sc://127.0.0.1:{port}"
    monkeypatch.setenv("SPARK_REMOTE", url)
    engine = SparkEngine()
    started = time.monotonic()
    with pytest.raises(EngineError) as error:
        engine.start(EngineConfig.from_dict({"mode": "remote", "remote": {"connect_timeout": 2}}))
    message = str(error.value)
    assert url in message and "within 2 s" in message and "lakehouse_ml.cluster start" in message
    assert time.monotonic() - started < 30
    assert not engine.running and os.environ["SPARK_REMOTE"] == url


def test_a_url_with_a_token_is_shown_without_it(monkeypatch):
    """Databricks-style URLs carry the token as a parameter: errors and logs never show it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SPARK_REMOTE", f"sc://127.0.0.1:{port}/;token=dapi-secret;user_id=u1")
    with pytest.raises(EngineError) as error:
        SparkEngine().start(EngineConfig.from_dict({"mode": "remote", "remote": {"connect_timeout": 1}}))
    assert f"sc://127.0.0.1:{port}/;…" in str(error.value) and "dapi-secret" not in str(error.value)


def test_remote_url_with_a_port_that_is_not_a_number_is_refused():
    with pytest.raises(EngineError, match="'sc://host:x': the port is not a number"):
        check_reachable("sc://host:x", 1)


@pytest.mark.parametrize("address", ["[::1]", "[::1]:{port}", "127.0.0.1:{port}", "localhost:{port}/;token=t"])
def test_remote_urls_are_probed_on_their_host_and_port(address):
    """IPv6 with and without a port, parameters after the path; the default port is Connect's."""
    with socket.socket(socket.AF_INET6 if address.startswith("[") else socket.AF_INET) as server:
        server.bind(("::1" if address.startswith("[") else "127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        url = "sc://" + address.format(port=port)
        if "{port}" in address:
            check_reachable(url, 2)  # answers: no error
        else:
            with pytest.raises(EngineError, match=r"\(::1:15002: "):
                check_reachable(url, 2)


def test_classic_mode_with_offline_jars_not_on_disk_names_them(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_REMOTE", "sc://untouched:1")
    engine = SparkEngine()
    present = tmp_path / "delta-storage.jar"
    present.write_bytes(b"")
    absent = str(tmp_path / "delta-spark.jar")
    with pytest.raises(EngineError) as error:
        engine.start(EngineConfig(mode="classic", classic_jars=(absent, str(present))))
    message = str(error.value)
    assert "classic.jars" in message and absent in message
    assert str(present) not in message

    # Nothing was started and the environment was left alone.
    assert not engine.running
    assert os.environ["SPARK_REMOTE"] == "sc://untouched:1"


def test_classic_mode_without_java_names_java_home_and_path(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_REMOTE", "sc://untouched:1")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    engine = SparkEngine()
    with pytest.raises(EngineError) as error:
        engine.start(EngineConfig(mode="classic"))
    message = str(error.value)
    assert "JAVA_HOME is not set" in message and "'java' on PATH" in message

    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(EngineError) as error:
        java_executable()
    assert f"JAVA_HOME is set to {str(tmp_path / 'jdk')!r}" in str(error.value)
    assert not engine.running
    assert os.environ["SPARK_REMOTE"] == "sc://untouched:1"


def test_missing_classic_jars(tmp_path):
    jar = tmp_path / "a.jar"
    jar.write_bytes(b"")
    assert missing_classic_jars(()) == []
    assert missing_classic_jars((str(jar),)) == []
    assert missing_classic_jars((str(jar), "/nowhere/b.jar")) == ["/nowhere/b.jar"]


def test_classic_jars_come_from_maven_into_a_cache_unless_listed(tmp_path):
    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    assert delta_package().startswith(f"io.delta:delta-spark_{spark_minor}_2.13:")
    assert delta_package("io.delta:x:1") == "io.delta:x:1"

    conf = classic_jar_conf(EngineConfig(mode="classic", classic_ivy_dir=str(tmp_path / "ivy")))
    assert conf["spark.jars.packages"] == delta_package()
    assert conf["spark.jars.ivy"] == str(tmp_path / "ivy")
    # Jars that pyspark ships are not taken a second time from Maven.
    assert "org.apache.hadoop:hadoop-client-runtime" in conf["spark.jars.excludes"]

    jar = tmp_path / "delta.jar"
    jar.write_bytes(b"")
    assert classic_jar_conf(EngineConfig(mode="classic", classic_jars=(str(jar),))) == {"spark.jars": str(jar)}


@pytest.mark.slow
def test_classic_mode_runs_delta_merge_and_time_travel(tmp_path):
    """The project's classic config: Delta from Maven (cached), a MERGE on a path, time travel."""
    spark_yml = {
        **project_config("local")["spark"],
        "mode": "classic",
        "spark_conf": {
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": "2",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.driver.memory": "1g",
        },
    }
    result, _ = run_child(
        tmp_path,
        f"""
        import json, os
        from lakehouse_ml.datasets import SparkDeltaDataset
        from lakehouse_ml.engine import ENGINE, EngineConfig

        spark = ENGINE.start(EngineConfig.from_dict({spark_yml!r}))
        out = {{"remote": os.environ.get("SPARK_REMOTE")}}
        ds = SparkDeltaDataset(filepath="t")
        ds.save(spark.range(3))
        out["total"] = ds.load().groupBy().sum("id").collect()[0][0]

        path = os.path.abspath("m")
        spark.sql("SELECT id, 'v0' AS v FROM range(3)").write.format("delta").save(path)
        spark.sql("SELECT id, 'v1' AS v FROM range(2, 5)").createOrReplaceTempView("updates")
        spark.sql(
            f"MERGE INTO delta.`{{path}}` AS t USING updates AS s ON t.id = s.id "
            "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        )
        rows = lambda df: sorted([r.id, r.v] for r in df.collect())
        out["now"] = rows(spark.read.format("delta").load(path))
        out["v0"] = rows(spark.read.format("delta").option("versionAsOf", 0).load(path))
        ENGINE.stop()
        print(json.dumps(out))
        """,
        timeout=420,
    )
    assert result["remote"] is None
    assert result["total"] == 3
    assert result["now"] == [[0, "v0"], [1, "v0"], [2, "v1"], [3, "v1"], [4, "v1"]]
    assert result["v0"] == [[0, "v0"], [1, "v0"], [2, "v0"]]


# ------------------------------------------------------------------------------- embedded


def test_embedded_engine_sets_spark_remote_for_kedro_datasets_and_stops_cleanly(tmp_path):
    result, elapsed = run_child(
        tmp_path,
        """
        import json, os, re, time
        from kedro_datasets._utils.spark_utils import get_spark as kedro_get_spark
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        from lakehouse_ml.engine import ENGINE, EngineConfig, get_spark

        out = {"remote_before": os.environ.get("SPARK_REMOTE")}
        session = ENGINE.start(EngineConfig(spark_conf={"spark.sql.session.timeZone": "UTC"}))
        host, port = ENGINE._server.listening_address
        out["remote"] = os.environ["SPARK_REMOTE"]
        out["expected_remote"] = f"sc://127.0.0.1:{port}"
        out["url"] = ENGINE.url
        out["start_again_is_same"] = ENGINE.start(EngineConfig()) is session
        kedro = kedro_get_spark()
        out["kedro_is_connect"] = isinstance(kedro, ConnectSession)
        out["kedro_is_engine_session"] = kedro is session
        out["project_is_engine_session"] = get_spark() is session
        out["sum"] = kedro.range(5).groupBy().sum("id").collect()[0][0]
        out["tz"] = kedro.conf.get("spark.sql.session.timeZone")
        ENGINE.stop()
        out["running_after_stop"] = ENGINE.running
        out["remote_after_stop"] = os.environ.get("SPARK_REMOTE")

        # An existing SPARK_REMOTE is put back on stop, and the engine can start again.
        os.environ["SPARK_REMOTE"] = "sc://elsewhere:15002"
        again = ENGINE.start(EngineConfig())
        out["restart_remote_is_local"] = os.environ["SPARK_REMOTE"].startswith("sc://127.0.0.1:")
        out["restart_count"] = again.range(7).count()
        ENGINE.stop()
        out["remote_restored"] = os.environ.get("SPARK_REMOTE")
        out["stopped_at"] = time.time()
        print(json.dumps(out), flush=True)
        """,
        timeout=60,
    )
    exited_at = time.time()
    assert result["remote_before"] is None
    assert result["remote"] == result["expected_remote"]
    assert result["url"] == result["remote"]
    assert result["start_again_is_same"] is True
    assert result["kedro_is_connect"] is True
    assert result["kedro_is_engine_session"] is True
    assert result["project_is_engine_session"] is True
    assert result["sum"] == 10
    assert result["tz"] == "UTC"
    assert result["running_after_stop"] is False
    assert result["remote_after_stop"] is None
    assert result["restart_remote_is_local"] is True
    assert result["restart_count"] == 7
    assert result["remote_restored"] == "sc://elsewhere:15002"
    # The process ends promptly once the engine is stopped (no hang on exit).
    assert exited_at - result["stopped_at"] < 10
    assert elapsed < 45


def test_embedded_env_is_applied_without_overriding_the_shell(tmp_path):
    result, _ = run_child(
        tmp_path,
        """
        import json, os
        from lakehouse_ml.engine import ENGINE, EngineConfig

        ENGINE.start(EngineConfig(embedded_env={"LAKEHOUSE_TEST_A": "from-yml", "LAKEHOUSE_TEST_B": "from-yml"}))
        out = {k: os.environ.get(k) for k in ("LAKEHOUSE_TEST_A", "LAKEHOUSE_TEST_B")}
        ENGINE.stop()
        print(json.dumps(out))
        """,
        LAKEHOUSE_TEST_B="from-shell",
    )
    assert result == {"LAKEHOUSE_TEST_A": "from-yml", "LAKEHOUSE_TEST_B": "from-shell"}


# --------------------------------------------------------------------------------- remote


def test_remote_mode_connects_to_a_running_spark_connect_server(tmp_path):
    result, _ = run_child(
        tmp_path,
        """
        import json, os
        from pysail.spark import SparkConnectServer

        from lakehouse_ml.engine import ENGINE, EngineConfig

        server = SparkConnectServer("127.0.0.1", 0)
        server.start(background=True)
        host, port = server.listening_address
        url = f"sc://{host}:{port}"
        out = {"url": url}

        # 1. The URL comes from SPARK_REMOTE (it wins over remote.url).
        os.environ["SPARK_REMOTE"] = url
        spark = ENGINE.start(EngineConfig(mode="remote", remote_url="sc://ignored:1"))
        out["engine_url"] = ENGINE.url
        out["rows"] = [list(r) for r in spark.sql("SELECT id, id * id AS sq FROM range(4)").collect()]
        ENGINE.stop()
        out["running_after_stop"] = ENGINE.running

        # 2. The URL comes from remote.url; the engine exports it for kedro-datasets.
        del os.environ["SPARK_REMOTE"]
        spark = ENGINE.start(EngineConfig(mode="remote", remote_url=url))
        out["exported"] = os.environ.get("SPARK_REMOTE")
        from kedro_datasets._utils.spark_utils import get_spark
        out["kedro_count"] = get_spark().range(3).count()
        ENGINE.stop()
        server.stop()
        print(json.dumps(out))
        """,
    )
    assert result["engine_url"] == result["url"]
    assert result["rows"] == [[0, 0], [1, 1], [2, 4], [3, 9]]
    assert result["running_after_stop"] is False
    assert result["exported"] == result["url"]
    assert result["kedro_count"] == 3


def test_engine_survives_a_module_reload_as_in_reload_kedro():
    """%reload_kedro re-imports project modules; a new engine would start a second server."""
    import importlib

    import lakehouse_ml.engine as engine_module

    before = engine_module.ENGINE
    reloaded = importlib.reload(engine_module)
    assert reloaded.ENGINE is before
