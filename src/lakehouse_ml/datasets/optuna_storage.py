"""Where the Optuna study lives, as a Kedro dataset: a SQLite file, or a database server shared by a team.

A catalog entry rather than a parameter because only catalog datasets receive Kedro's credentials
(``conf/<env>/credentials.yml``, whose values may be ``${oc.env:...}``): the password never sits in
a parameter, a URL in the catalog or a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from kedro.io.core import AbstractDataset, DatasetError
from sqlalchemy.engine import URL, make_url

ENTRY = "optuna_storage"
CREDENTIAL_KEYS = ("username", "password")
CONNECT_TIMEOUT_S = 5
# SQLSTATE 28P01 (invalid_password) and 28000 (invalid_authorization_specification); libpq reports
# a refused login before any session exists, so the message is the only sign on some drivers.
AUTH_SQLSTATES = ("28P01", "28000")
AUTH_MESSAGES = ("password authentication failed", "authentication failed", "access denied", "no password supplied")


class OptunaStorageError(DatasetError):
    """The study storage cannot be reached or refused us; the message names the setting to check."""


def storage_label(url: str | URL) -> str:
    """``<dialect>://host:port/database`` without user or password, for messages and logs."""
    parsed = make_url(url) if isinstance(url, str) else url
    # URL.set() ignores None, so the URL is rebuilt without its user and password.
    bare = URL.create(
        parsed.drivername, host=parsed.host, port=parsed.port, database=parsed.database, query=parsed.query
    )
    return bare.render_as_string(hide_password=True)


def _parse(url: Any) -> URL:
    """``url`` as a SQLAlchemy URL whose dialect and driver are installed, else an actionable error."""
    if not isinstance(url, str) or not url.strip():
        raise OptunaStorageError(
            f"{ENTRY}: `url` must be a database URL such as sqlite:///data/06_models/dev/optuna.db or "
            f"postgresql+psycopg://host:5432/optuna, got {type(url).__name__}"
        )
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        # The URL itself is not repeated: a mistyped one may still hold a password.
        raise OptunaStorageError(
            f"{ENTRY}: `url` is not a database URL; expected e.g. sqlite:///data/06_models/dev/optuna.db "
            f"or postgresql+psycopg://host:5432/optuna"
        ) from None
    if parsed.password is not None:
        raise OptunaStorageError(
            f"{ENTRY}: `url` ({storage_label(parsed)}) holds a password; move it to conf/<env>/credentials.yml "
            f"(`{ENTRY}: {{username: ..., password: ...}}`) and set `credentials: {ENTRY}` on the catalog entry"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as missing:
        raise OptunaStorageError(
            f"{ENTRY}: `url` {storage_label(parsed)}: the database driver is not installed ({missing}); "
            f"for PostgreSQL use postgresql+psycopg:// (psycopg 3, a dependency of this project)"
        ) from None
    return parsed


def _with_credentials(url: URL, credentials: Any) -> URL:
    """``url`` with the credentials entry's user and password (SQLAlchemy quotes them)."""
    if credentials is None:
        return url
    if url.get_backend_name() == "sqlite":
        raise OptunaStorageError(f"{ENTRY}: a SQLite file has no users; remove `credentials` from the catalog entry")
    if not isinstance(credentials, dict) or set(credentials) != set(CREDENTIAL_KEYS):
        keys = sorted(credentials) if isinstance(credentials, dict) else type(credentials).__name__
        raise OptunaStorageError(
            f"{ENTRY}: the credentials entry must hold exactly `username` and `password` "
            f"(conf/<env>/credentials.yml `{ENTRY}: {{username: ..., password: ...}}`), got {keys}"
        )
    if not all(isinstance(credentials[key], str) and credentials[key] for key in CREDENTIAL_KEYS):
        raise OptunaStorageError(
            f"{ENTRY}: `username` and `password` of the credentials entry must be non-empty strings "
            f"(an unset ${{oc.env:...}} variable?)"
        )
    return url.set(username=credentials["username"], password=credentials["password"])


def _is_auth_failure(error: sqlalchemy.exc.DBAPIError) -> bool:
    """Whether the server refused the login (as opposed to not answering)."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate in AUTH_SQLSTATES or any(text in str(error.orig).lower() for text in AUTH_MESSAGES)


class OptunaStorageDataset(AbstractDataset[None, optuna.storages.RDBStorage]):
    """An Optuna RDB storage: ``url`` (no password in it) plus an optional ``credentials`` entry
    (``username``, ``password``) merged into the URL.

    ``load`` creates a SQLite file's folder, connects (a server gets ``CONNECT_TIMEOUT_S`` seconds
    to answer) and returns the :class:`optuna.storages.RDBStorage`; a server that is down or refuses
    the login fails with :class:`OptunaStorageError` naming the storage and the setting to check.
    Only the Kedro process (the Spark driver) opens it: Spark tasks only return fold scores.
    """

    def __init__(
        self,
        *,
        url: str,
        credentials: dict[str, Any] | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        parsed = _parse(url)
        self._label = storage_label(parsed)
        self._uses_credentials = credentials is not None
        self._url = _with_credentials(parsed, credentials)
        if engine_kwargs is not None and not isinstance(engine_kwargs, dict):
            raise OptunaStorageError(f"{ENTRY}: `engine_kwargs` must be a mapping, got {type(engine_kwargs).__name__}")
        self._engine_kwargs = self._default_engine_kwargs(engine_kwargs or {})
        self.metadata = metadata

    def _default_engine_kwargs(self, given: dict[str, Any]) -> dict[str, Any]:
        """A server answers within ``CONNECT_TIMEOUT_S`` (not libpq's unbounded wait) and a pooled
        connection the server dropped is replaced before use (``pool_pre_ping``)."""
        if self._url.get_backend_name() != "postgresql":
            return dict(given)
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S, **(given.get("connect_args") or {})}
        return {"pool_pre_ping": True, **given, "connect_args": connect_args}

    @property
    def label(self) -> str:
        """Where the study lives, without user or password."""
        return self._label

    def _describe(self) -> dict[str, Any]:
        return {"url": self._label, "credentials": ENTRY if self._uses_credentials else None}

    def _sqlite_folder(self) -> None:
        """Create the folder of a ``sqlite:///<file>`` storage (SQLite creates the file, not its folder)."""
        database = self._url.database
        if (
            self._url.get_backend_name() == "sqlite"
            and database
            and database != ":memory:"
            and not database.startswith("file:")
        ):
            Path(database).parent.mkdir(parents=True, exist_ok=True)

    def _connection_error(self, error: sqlalchemy.exc.DBAPIError) -> OptunaStorageError:
        """The error a failed connection becomes: the storage, what happened and the setting to check."""
        if _is_auth_failure(error):
            return OptunaStorageError(
                f"Optuna study storage {self._label} refused the login: check `username` and `password` of the "
                f"credentials entry `{ENTRY}` (conf/<env>/credentials.yml) against the database's role"
            )
        return OptunaStorageError(
            f"Optuna study storage {self._label} did not answer within {CONNECT_TIMEOUT_S} s or refused the "
            f"connection ({type(error.orig).__name__}): is the server up and reachable? Check the catalog "
            f"entry `{ENTRY}`'s `url` (host, port, database) in conf/<env>/catalog*.yml"
        )

    def load(self) -> optuna.storages.RDBStorage:
        """Connect (creating Optuna's tables on first use) and return the storage."""
        self._sqlite_folder()
        try:
            return optuna.storages.RDBStorage(
                self._url.render_as_string(hide_password=False), engine_kwargs=self._engine_kwargs
            )
        except sqlalchemy.exc.DBAPIError as error:
            # Not chained: the driver's message may echo the connection string.
            raise self._connection_error(error) from None

    def save(self, data: None) -> None:
        """Not supported: the study writes its trials itself."""
        raise DatasetError(f"{ENTRY} is read-only: Optuna writes the trials through the storage `load` returns")
