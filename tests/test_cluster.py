"""The local cluster's launcher: arguments, refusals and the state folder (no JVM started here)."""

from __future__ import annotations

import json
import socket

import pytest

from lakehouse_ml.cluster import (
    CONNECT_SERVER_CLASS,
    ClusterConfig,
    ClusterError,
    connect_server_argv,
    main,
    start,
    status,
    stop,
)


def test_connect_server_argv_enables_delta_on_the_master(tmp_path):
    config = ClusterConfig(state_dir=tmp_path, delta_package="io.delta:delta-spark_4.2_2.13:4.4.0")
    argv = connect_server_argv(config)
    assert argv[argv.index("--master") + 1] == "spark://127.0.0.1:7077"
    assert argv[argv.index("--class") + 1] == CONNECT_SERVER_CLASS
    assert argv[argv.index("--packages") + 1] == "io.delta:delta-spark_4.2_2.13:4.4.0"
    confs = [argv[i + 1] for i, a in enumerate(argv) if a == "--conf"]
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in confs
    assert "spark.connect.grpc.binding.port=15002" in confs
    assert argv[-1] == "spark-internal"


def test_start_refuses_a_busy_port_naming_it(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ClusterError) as error:
            start(ClusterConfig(state_dir=tmp_path, master_port=port))
    assert f"port 127.0.0.1:{port} for the master is already in use" in str(error.value)
    assert not (tmp_path / "pids.json").exists()


def test_stop_and_status_only_touch_recorded_processes_that_are_still_ours(tmp_path, capsys):
    # A recorded pid whose command line is not the Spark class we started (here: this pytest
    # process) is never signalled.
    import os

    config = ClusterConfig(state_dir=tmp_path)
    config.pid_file.write_text(
        json.dumps({"processes": {"master": {"pid": os.getpid(), "cls": "org.example.NotUs", "log": ""}}})
    )
    assert status(config) == {"master": False}
    assert stop(config) == []
    assert not config.pid_file.exists()
    assert main(["stop", "--state-dir", str(tmp_path)]) == 0
    assert "nothing was running" in capsys.readouterr().out
