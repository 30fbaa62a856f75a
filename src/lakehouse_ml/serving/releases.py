"""The releases the service answers with: ``champion`` and ``challenger`` resolved from registry aliases.

A refresh resolves both aliases to versions; a version not loaded yet is loaded (sklearn flavor),
smoke-scored and checked against the served inputs *beside* the serving state, and only then the
whole :class:`ServingState` is replaced by one reference assignment. A request reads
``releases.state`` once and uses that snapshot throughout, so a promotion or a rollback never fails
a request in flight. Versions are found by alias only, never as "the latest".
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from lakehouse_ml.features.contracts import FeatureContract
from lakehouse_ml.features.on_demand import OnDemandFeature
from lakehouse_ml.serving.config import Traffic
from lakehouse_ml.serving.request_validation import RequestValidator, error_summary, input_fields

logger = logging.getLogger(__name__)

ROLES = ("champion", "challenger")
_BUCKETS = 10_000


@dataclass(frozen=True)
class ModelRelease:
    """One loaded registered version and the role it plays."""

    role: str
    alias: str
    name: str
    version: str
    run_id: str | None
    model_uri: str
    threshold: float | None
    model: Any = field(repr=False)
    input_columns: tuple[str, ...]
    input_schema: Any = field(repr=False)
    loaded_at: datetime
    # The pipeline's numpy scoring path (lakehouse_ml.modeling.compiled), checked equal to it at
    # load; None: the pipeline scores.
    compiled: Any = field(default=None, repr=False)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Positive-class probabilities of the rows of ``frame``."""
        if self.compiled is not None:
            return self.compiled.predict_proba(frame)[:, 1]
        if tuple(frame.columns) != self.input_columns:  # a column selection copies the frame: only when needed
            frame = frame[list(self.input_columns)]
        return self.model.predict_proba(frame)[:, 1]

    def describe(self) -> dict[str, Any]:
        """What ``/version`` reports."""
        return {
            "alias": self.alias,
            "version": self.version,
            "model_uri": self.model_uri,
            "run_id": self.run_id,
            "operating_threshold": self.threshold,
            "loaded_at": self.loaded_at.isoformat(),
            "scoring_path": "compiled" if self.compiled is not None else "pipeline",
        }


@dataclass(frozen=True)
class ServingState:
    """What answers requests right now; replaced whole, never mutated."""

    champion: ModelRelease | None
    challenger: ModelRelease | None
    traffic: Traffic
    validator: RequestValidator | None
    generation: int = 0

    def role_for(self, customer_id: str | None) -> str:
        """Who answers a row: the challenger for a sticky share of customers in canary mode."""
        if self.challenger is None or self.traffic.mode != "canary" or customer_id is None:
            return "champion"
        return "challenger" if canary_bucket(customer_id) < round(self.traffic.share * _BUCKETS) else "champion"

    def release(self, role: str) -> ModelRelease | None:
        """The release playing ``role``."""
        return self.champion if role == "champion" else self.challenger


def canary_bucket(customer_id: str) -> int:
    """A stable bucket in [0, 10000) per customer: the same customer always gets the same answerer."""
    digest = hashlib.blake2b(customer_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _BUCKETS


class ReleaseError(RuntimeError):
    """A new version failed its check beside the serving one; the serving one stays."""


def load_release(model_name: str, alias: str, role: str) -> ModelRelease | None:
    """Resolve ``alias`` to a version and load it (sklearn flavor); None when the alias does not exist."""
    # Imported here, off the path to listening: scikit-learn is most of the service's import time.
    from lakehouse_ml.datasets.mlflow_model import RegisteredModelAliasDataset
    from lakehouse_ml.modeling.compiled import compile_pipeline

    entry = RegisteredModelAliasDataset(model_name=model_name, alias=alias, required=False, flavor="sklearn").load()
    if entry is None:
        return None
    return ModelRelease(
        role=role,
        alias=alias,
        name=model_name,
        version=entry["version"],
        run_id=entry["run_id"],
        model_uri=entry["model_uri"],
        threshold=entry["operating_threshold"],
        model=entry["model"],
        input_columns=tuple(entry["input_columns"]),
        input_schema=entry["input_schema"],
        loaded_at=datetime.now(timezone.utc),
        compiled=compile_pipeline(entry["model"], list(entry["input_columns"])),
    )


def resolve_alias(model_name: str, alias: str) -> str | None:
    """The version an alias points to now (None when the model or alias does not exist)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def smoke_test(release: ModelRelease, validator: RequestValidator) -> None:
    """Score sample rows of the served inputs with ``release``; :class:`ReleaseError` if it cannot serve them."""
    missing = sorted(set(release.input_columns) - set(validator.by_name))
    if missing:
        raise ReleaseError(
            f"{release.name} version {release.version} needs inputs the champion's requests do not carry: {missing}"
        )
    rows = validator.sample_rows()
    try:
        scores = release.score(validator.frame(rows))
    except Exception as error:  # noqa: BLE001 - any failure of a model call means it cannot serve
        logger.error(
            "serving: %s version %s failed to score sample rows: %s: %s",
            release.name,
            release.version,
            type(error).__name__,
            error,
        )
        raise ReleaseError(
            f"{release.name} version {release.version} failed to score sample rows: {error_summary(error)}"
        ) from None
    if scores.shape != (len(rows),) or not np.all(np.isfinite(scores)) or not np.all((scores >= 0) & (scores <= 1)):
        raise ReleaseError(
            f"{release.name} version {release.version} scored sample rows as {scores!r}: expected {len(rows)} probabilities in [0, 1]"
        )


class Releases:
    """The serving state and how it changes: alias refreshes (admin call, poll thread) and traffic settings."""

    def __init__(  # noqa: PLR0913
        self,
        model_name: str,
        aliases: dict[str, str],
        contracts: dict[str, FeatureContract],
        max_batch_size: int,
        traffic: Traffic,
        loader: Callable[[str, str, str], ModelRelease | None] = load_release,
        resolver: Callable[[str, str], str | None] = resolve_alias,
        on_demand: dict[str, OnDemandFeature] | None = None,
        max_string_length: int = 256,
    ) -> None:
        self.model_name, self.aliases, self.contracts, self.max_batch_size = (
            model_name,
            aliases,
            contracts,
            max_batch_size,
        )
        self.on_demand, self.max_string_length = dict(on_demand or {}), max_string_length
        self._loader, self._resolver = loader, resolver
        self.state = ServingState(champion=None, challenger=None, traffic=traffic, validator=None)
        self.listeners: list[Callable[[ServingState], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> dict[str, Any]:
        """Re-resolve both aliases, load and check what changed, swap atomically; per role what happened."""
        with self._lock:
            current = self.state
            champion, champion_outcome, validator = self._next_champion(current)
            challenger, challenger_outcome = self._next_challenger(current, validator)
            if champion is current.champion and challenger is current.challenger:
                return {"champion": champion_outcome, "challenger": challenger_outcome, "changed": False}
            self._publish(replace(current, champion=champion, challenger=challenger, validator=validator))
            return {"champion": champion_outcome, "challenger": challenger_outcome, "changed": True}

    def set_traffic(self, traffic: Traffic) -> None:
        """Change the challenger's part (e.g. share 0: instant canary rollback), atomically."""
        with self._lock:
            self._publish(replace(self.state, traffic=traffic))

    def _publish(self, state: ServingState) -> None:
        state = replace(state, generation=self.state.generation + 1)
        self.state = state  # the swap: one reference assignment
        for listener in self.listeners:
            listener(state)

    def _candidate(self, current: ServingState, role: str) -> tuple[ModelRelease | None, dict[str, Any]]:
        """The release the alias of ``role`` points to now: the serving object when unchanged, else loaded."""
        alias, old = self.aliases[role], current.release(role)
        version = self._resolver(self.model_name, alias)
        outcome = {"alias": alias, "from": old.version if old else None, "to": version}
        if version is None or (old is not None and old.version == version):
            return (None if version is None else old), outcome
        loaded = next(
            (r for r in (current.champion, current.challenger) if r is not None and r.version == version), None
        )
        if loaded is not None:  # e.g. a promoted challenger: already loaded and checked
            return replace(loaded, role=role, alias=alias), outcome
        release = self._loader(self.model_name, alias, role)
        outcome["to"] = release.version if release else None
        return release, outcome

    def _next_champion(
        self, current: ServingState
    ) -> tuple[ModelRelease | None, dict[str, Any], RequestValidator | None]:
        try:
            champion, outcome = self._candidate(current, "champion")
            if champion is None or champion is current.champion:
                return champion, outcome, (current.validator if champion is not None else None)
            fields = input_fields(champion.input_schema, self.contracts, self.on_demand, self.max_string_length)
            validator = RequestValidator(fields, self.max_batch_size, self.max_string_length)
            smoke_test(champion, validator)
        except Exception as error:  # noqa: BLE001 - a failed load or check keeps the serving champion
            return current.champion, self._failed("champion", error), current.validator
        logger.info("serving: champion %s version %s (from %s)", self.model_name, champion.version, outcome["from"])
        return champion, outcome, validator

    def _next_challenger(
        self, current: ServingState, validator: RequestValidator | None
    ) -> tuple[ModelRelease | None, dict[str, Any]]:
        # A serving challenger stays on a failure only if it was checked against the same champion inputs.
        fallback = current.challenger if validator is current.validator else None
        try:
            challenger, outcome = self._candidate(current, "challenger")
            if (
                challenger is not None
                and validator is not None
                and (challenger is not current.challenger or validator is not current.validator)
            ):
                smoke_test(challenger, validator)
        except Exception as error:  # noqa: BLE001 - a challenger that cannot serve is not served
            return fallback, self._failed("challenger", error)
        if challenger is not current.challenger:
            logger.info(
                "serving: challenger %s version %s (from %s)",
                self.model_name,
                challenger.version if challenger else None,
                outcome["from"],
            )
        return challenger, outcome

    def _failed(self, role: str, error: Exception) -> dict[str, Any]:
        logger.error("serving: %s alias %r not swapped: %s", role, self.aliases[role], error)
        # Our own refusals are worded for the caller; a load failure's message may name local paths.
        shown = f"{type(error).__name__}: {error}" if isinstance(error, ReleaseError) else error_summary(error)
        return {"alias": self.aliases[role], "error": shown}

    def start_polling(self, interval_s: float) -> None:
        """Refresh every ``interval_s`` seconds on a daemon thread (0: never)."""
        if interval_s <= 0 or self._thread is not None:
            return

        def poll() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
                except Exception:
                    logger.exception("serving: alias poll failed")

        self._thread = threading.Thread(target=poll, name="serving-alias-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
