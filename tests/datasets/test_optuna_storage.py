"""OptunaStorageDataset without a server: URL checks, credentials merged into the URL, no password shown."""

from __future__ import annotations

import optuna
import pytest
from kedro.io import DataCatalog
from kedro.io.core import DatasetError
from sqlalchemy.engine import make_url

from lakehouse_ml.datasets import OptunaStorageDataset
from lakehouse_ml.datasets.optuna_storage import OptunaStorageError, storage_label

SECRET = "p@ss:w/rd%1"  # characters a URL must quote
SERVER = "postgresql+psycopg://db.example:5433/optuna"
QUOTED = "p%40ss%3Aw%2Frd%251"  # SECRET as it appears in a URL


def test_credentials_are_merged_into_the_url_quoted_and_never_shown():
    dataset = OptunaStorageDataset(url=SERVER, credentials={"username": "optuna", "password": SECRET})
    merged = make_url(dataset._url.render_as_string(hide_password=False))
    assert (merged.username, merged.password, merged.host, merged.port, merged.database) == (
        "optuna",
        SECRET,
        "db.example",
        5433,
        "optuna",
    )
    shown = f"{dataset} {dataset._describe()} {dataset.label}"
    assert SECRET not in shown and "optuna@" not in shown
    assert dataset.label == SERVER
    assert dataset._describe() == {"url": SERVER, "credentials": "optuna_storage"}


def test_a_server_gets_a_short_connect_timeout_and_pre_ping_unless_configured():
    dataset = OptunaStorageDataset(url=SERVER, credentials={"username": "u", "password": "p"})
    assert dataset._engine_kwargs == {"pool_pre_ping": True, "connect_args": {"connect_timeout": 5}}
    tuned = OptunaStorageDataset(
        url=SERVER, engine_kwargs={"connect_args": {"connect_timeout": 2, "sslmode": "require"}}
    )
    assert tuned._engine_kwargs["connect_args"] == {"connect_timeout": 2, "sslmode": "require"}
    assert OptunaStorageDataset(url="sqlite:///x.db")._engine_kwargs == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": ""}, r"`url` must be a database URL"),
        ({"url": "not a url"}, r"`url` is not a database URL"),
        ({"url": f"postgresql+psycopg://optuna:{SECRET}@db:5432/optuna"}, r"`url` is not a database URL"),
        (
            {"url": f"postgresql+psycopg://optuna:{QUOTED}@db:5432/optuna"},
            r"holds a password; move it to conf/<env>/credentials.yml",
        ),
        ({"url": "postgresql+nodriver://db/optuna"}, r"the database driver is not installed"),
        ({"url": "sqlite:///x.db", "credentials": {"username": "u", "password": "p"}}, r"a SQLite file has no users"),
        ({"url": SERVER, "credentials": {"user": "u", "password": "p"}}, r"exactly `username` and `password`"),
        ({"url": SERVER, "credentials": {"username": "u", "password": None}}, r"non-empty strings"),
        ({"url": SERVER, "engine_kwargs": "pool_size=5"}, r"`engine_kwargs` must be a mapping"),
    ],
)
def test_a_bad_setting_fails_at_construction_naming_it_without_the_password(kwargs, message):
    with pytest.raises(OptunaStorageError, match=message) as raised:
        OptunaStorageDataset(**kwargs)
    assert SECRET not in str(raised.value) and QUOTED not in str(raised.value)
    assert str(raised.value).startswith("optuna_storage:")


def test_load_creates_the_sqlite_folder_and_returns_a_working_storage(tmp_path):
    path = tmp_path / "models" / "dev" / "optuna.db"
    storage = OptunaStorageDataset(url=f"sqlite:///{path}").load()
    assert isinstance(storage, optuna.storages.RDBStorage) and path.exists()
    optuna.create_study(study_name="s", storage=storage).optimize(
        lambda trial: trial.suggest_float("x", 0, 1), n_trials=1
    )
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{path}").trials) == 1


def test_the_catalog_passes_the_credentials_entry_and_save_is_refused(tmp_path):
    catalog = DataCatalog.from_config(
        {
            "optuna_storage": {
                "type": "lakehouse_ml.datasets.OptunaStorageDataset",
                "url": SERVER,
                "credentials": "optuna_storage",
            }
        },
        credentials={"optuna_storage": {"username": "optuna", "password": SECRET}},
    )
    dataset = catalog.get("optuna_storage")
    assert make_url(dataset._url.render_as_string(hide_password=False)).password == SECRET
    with pytest.raises(DatasetError, match="read-only"):
        catalog.save("optuna_storage", {"trials": []})


def test_storage_label_drops_user_and_password():
    assert (
        storage_label(f"postgresql+psycopg://optuna:{QUOTED}@h:1/d?sslmode=require")
        == "postgresql+psycopg://h:1/d?sslmode=require"
    )
    assert storage_label("sqlite:///data/06_models/dev/optuna.db") == "sqlite:///data/06_models/dev/optuna.db"
