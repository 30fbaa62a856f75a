"""The scoring core, without HTTP: route rows to champion or challenger, score each group in one
model call, log every scored row, score shadow copies off the response path, look customers up
in the online store and apply the contract policy."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from lakehouse_ml.features.contracts import parse_contract
from lakehouse_ml.features.on_demand import parse_on_demand
from lakehouse_ml.serving.config import ServingSettings
from lakehouse_ml.serving.inference_log import InferenceLog, LogBatch
from lakehouse_ml.serving.prometheus import ServingMetrics
from lakehouse_ml.serving.releases import ModelRelease, Releases, ServingState
from lakehouse_ml.serving.request_validation import ApiProblem, CustomerIdsValidator, error_summary, problem

logger = logging.getLogger(__name__)


class ScoringService:
    """Releases, online lookups, inference log and shadow scoring of one service instance."""

    def __init__(self, settings: ServingSettings, metrics: ServingMetrics) -> None:
        self.settings, self.metrics = settings, metrics
        contracts = {name: parse_contract(name, raw) for name, raw in settings.contracts.items()}
        # The tables the model's lookups read (a table left out of the lookups is never published).
        self.tables = list(settings.lookups)
        self.releases = Releases(
            settings.model_name,
            settings.aliases,
            contracts,
            settings.max_batch_size,
            settings.traffic,
            on_demand=parse_on_demand(settings.on_demand_features),
            max_string_length=settings.max_string_length,
        )
        self.releases.listeners.append(self._on_state)
        self.log = InferenceLog(settings.inference_log, metrics)
        self.customer_ids = CustomerIdsValidator(settings.max_batch_size, settings.max_string_length)
        self._shadow = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="serving-shadow", initializer=self.limit_threads
        )
        self._shadow_waiting = 0
        self._shadow_lock = threading.Lock()
        self._store_lock = threading.Lock()
        self.store: Any = None
        self._lookup: Any = None
        self.store_error: str | None = None  # what responses show: never the message (it may name the store's path)
        self._store_failed_at: float | None = None  # monotonic time of the store's last failure
        # Set once the first load has ended, whatever its outcome: from then on every change of the
        # releases calls on_loaded too (the caller's "loaded" goes by on_loaded, not by this).
        self._first_load_done = threading.Event()
        self._starter: threading.Thread | None = None
        self._on_loaded: Callable[[], None] | None = None
        self._stopping = threading.Event()  # from stop() on, a load in flight opens no store

    # ------------------------------------------------------------------ lifecycle

    def start(self, on_loaded: Callable[[], None] | None = None) -> None:
        """Start flushing the inference log and load the rest on a thread (:meth:`load`): the server
        listens, and answers liveness, while the releases load. ``on_loaded`` is called on the
        loading thread once the first load has ended, whatever its outcome, and again whenever the
        releases change (a model loaded later may bring libraries of its own)."""
        self._on_loaded = on_loaded
        self.log.start()
        self._starter = threading.Thread(target=self.load, name="serving-start", daemon=True)
        self._starter.start()

    def load(self) -> None:
        """Resolve and load the releases, open the online store, start polling; then ``on_loaded``."""
        try:
            outcome = self.releases.refresh()
            logger.info(
                "serving: started with %s (champion %s, challenger %s)",
                self.settings.model_name,
                outcome["champion"].get("to"),
                outcome["challenger"].get("to"),
            )
            self.lookup()
        except Exception:
            # Not fatal: /ready names what is missing and the poll below tries the aliases again.
            logger.exception("serving: the first load of the releases failed")
        finally:
            self.releases.start_polling(self.settings.poll_interval_s)
            if self._on_loaded is not None and not self._stopping.is_set():
                self._on_loaded()
            self._first_load_done.set()

    def stop(self) -> None:
        """Stop polling, finish shadow scores, flush the inference log, close the store."""
        self._stopping.set()
        if self._starter is not None:
            self._starter.join(timeout=5)
        self.releases.stop()
        self._shadow.shutdown(wait=True)
        self.log.close()
        # After a load in flight has opened the store, or never: lookup() opens none once stopping.
        if not self._store_lock.acquire(timeout=5):
            logger.warning("serving: the online store was still opening at shutdown; it closes itself after")
            return
        try:
            if self.store is not None:
                self.store.close()
        finally:
            self._store_lock.release()

    def limit_threads(self) -> Any:
        """Cap the calling thread's OpenMP/BLAS threads at ``model_threads`` (OpenMP limits are per thread)."""
        if not self.settings.model_threads:
            return None
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=self.settings.model_threads)

    def _on_state(self, state: ServingState) -> None:
        versions = {
            role: (state.release(role).version if state.release(role) else None) for role in ("champion", "challenger")
        }
        self.metrics.set_releases(versions, state.traffic.share if state.traffic.mode == "canary" else 0.0)
        if self._first_load_done.is_set() and self._on_loaded is not None and not self._stopping.is_set():
            self._on_loaded()

    def _store_failed(self, error: Exception) -> None:
        """Record a failure of the store: reported by /ready, and not asked again for ``online_store_retry_s``."""
        self.store_error, self._store_failed_at = error_summary(error), time.monotonic()

    def _unreachable(self) -> ApiProblem:
        return ApiProblem(
            503,
            [
                problem(
                    "online_store", "unavailable", "a reachable online store (serving.online_store)", self.store_error
                )
            ],
        )

    @staticmethod
    def _unpublished(got: str | None) -> ApiProblem:
        return ApiProblem(
            503,
            [
                problem(
                    "online_store",
                    "unavailable",
                    "an online store published by `kedro run --pipeline publish_online`",
                    got,
                )
            ],
        )

    def _store_resting(self) -> bool:
        """Whether the store failed less than ``online_store_retry_s`` ago (then it is not asked again yet)."""
        failed = self._store_failed_at
        return failed is not None and time.monotonic() - failed < self.settings.online_store_retry_s

    def lookup(self) -> Any:
        """The online feature lookup, opened on first use (None while the store cannot be opened)."""
        if self._lookup is not None or not self.settings.online_store or self._store_resting():
            return self._lookup
        with self._store_lock:
            if self._lookup is None and not self._stopping.is_set():
                from lakehouse_ml.online import OnlineFeatureLookup, open_online_store

                try:
                    store = open_online_store(dict(self.settings.online_store))
                    self._lookup = OnlineFeatureLookup.from_params(
                        store,
                        self.settings.contracts,
                        self.settings.lookups,
                        self.settings.on_demand_features,
                    )
                    self.store, self.store_error = store, None
                    if self._stopping.is_set():  # stop() gave up waiting for this open
                        store.close()
                except Exception as error:  # noqa: BLE001 - reported by /ready; payload scoring goes on
                    self._store_failed(error)
                    # The store's kind only: its options may carry a password (the error names where it is).
                    kind = self.settings.online_store.get("type")
                    logger.error(
                        "serving: online store (%s) cannot be opened: %s: %s", kind, type(error).__name__, error
                    )
        return self._lookup

    def store_tables(self) -> dict[str, dict[str, Any] | None]:
        """Each feature table's state in the online store (None: never published)."""
        from lakehouse_ml.online import OnlineStoreError

        if self.lookup() is None or self._store_resting():
            return {}
        try:
            return {table: self.store.table_state(table) for table in self.tables}
        except OnlineStoreError as error:  # a server down: /ready and /version report it, never a 500
            logger.error("serving: online store state unavailable: %s", error)
            self._store_failed(error)
            return {}

    # ------------------------------------------------------------------ scoring

    def score_rows(self, state: ServingState, rows: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
        """Score validated payload rows (``POST /v1/score``)."""
        frame = state.validator.frame(rows)
        return self._score(state, frame, [row.get("customer_id") for row in rows], request_id, "score")

    def score_customers(
        self, state: ServingState, customer_ids: list[str], request_id: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Score customers with their online features; (predictions, per-customer errors)."""
        lookup = self.lookup()
        if lookup is not None and self._store_resting():
            raise self._unreachable()
        if lookup is None:
            raise self._unpublished(self.store_error)
        from lakehouse_ml.online import OnlineStoreError
        from lakehouse_ml.online.vectors import NotPublishedError

        # "online_store": the time of the store's publish, read with the rows (None); "now": the wall clock.
        at = None if self.settings.request_time == "online_store" else datetime.now(timezone.utc)
        try:
            frame, problems = lookup.vectors(customer_ids, at=at, input_columns=list(state.validator.by_name))
        except NotPublishedError:
            raise self._unpublished("no table published") from None
        except OnlineStoreError as error:  # the store's server is down or refuses us: names the store, never secrets
            logger.error(
                "serving: online lookup failed: %s (lookups answer 503 for %.0f s)",
                error,
                self.settings.online_store_retry_s,
            )
            self._store_failed(error)
            raise self._unreachable() from None
        except ValueError as error:  # the lookups do not produce every model input: a configuration problem
            logger.error("serving: online lookup failed: %s", error)
            raise ApiProblem(
                503,
                [problem("online_store", "unavailable", "online features for every model input", error_summary(error))],
            ) from None
        if self._store_failed_at is not None:  # answered again: the store is back
            self.store_error = self._store_failed_at = None
        refuse = self.settings.on_contract_violation == "refuse"
        errors = [
            {
                "field": f"customer_ids[{i}]",
                "problem": "contract",
                "customer_id": customer,
                "expected": "online features within their contracts (and the customer in the online store)",
                "got": "; ".join(problems[customer]),
            }
            for i, customer in enumerate(customer_ids)
            if refuse and customer in problems
        ]
        if errors:
            self.metrics.refused_rows.inc(len(errors))
        keep = [i for i, customer in enumerate(customer_ids) if not (refuse and customer in problems)]
        if not keep:
            raise ApiProblem(422, errors)
        frame = frame.iloc[keep] if len(keep) < len(customer_ids) else frame
        ids = [customer_ids[i] for i in keep]
        flags = None if refuse else [problems.get(customer, []) for customer in ids]
        return self._score(state, frame.reset_index(drop=True), ids, request_id, "score_customers", keep, flags), errors

    def _score(
        self,
        state: ServingState,
        frame: pd.DataFrame,
        customer_ids: list[str | None],
        request_id: str,
        endpoint: str,
        row_indices: list[int] | None = None,
        flags: list[list[str]] | None = None,
    ) -> list[dict[str, Any]]:
        rows = row_indices if row_indices is not None else list(range(len(frame)))
        groups: dict[str, list[int]] = {}
        for position, customer in enumerate(customer_ids):
            groups.setdefault(state.role_for(customer), []).append(position)
        predictions: list[dict[str, Any]] = [{}] * len(rows)
        logged_at = datetime.now(timezone.utc)
        for role, positions in groups.items():
            release = state.release(role)
            part = frame if len(positions) == len(rows) else frame.iloc[positions]
            probabilities, elapsed = self._call(release, part, "served")
            for position, probability in zip(positions, probabilities):
                predictions[position] = _prediction(
                    release,
                    rows[position],
                    customer_ids[position],
                    float(probability),
                    flags[position] if flags is not None else None,
                )
            self.log.append(
                LogBatch(
                    request_id=request_id,
                    logged_at=logged_at,
                    endpoint=endpoint,
                    role=role,
                    served=True,
                    model_name=release.name,
                    model_version=release.version,
                    threshold=release.threshold,
                    row_indices=[rows[p] for p in positions],
                    customer_ids=[customer_ids[p] for p in positions],
                    features=part,
                    probabilities=probabilities,
                    latency_ms=elapsed * 1000,
                    flags=[flags[p] for p in positions] if flags is not None else None,
                )
            )
        if state.traffic.mode == "shadow" and state.challenger is not None:
            self._submit_shadow(state.challenger, frame, customer_ids, rows, request_id, endpoint, logged_at)
        return predictions

    def _call(self, release: ModelRelease, frame: pd.DataFrame, mode: str) -> tuple[Any, float]:
        started = time.perf_counter()
        probabilities = release.score(frame)
        elapsed = time.perf_counter() - started
        self.metrics.model_latency.labels(model_version=release.version, role=release.role).observe(elapsed)
        self.metrics.rows.labels(model_version=release.version, role=release.role, mode=mode).inc(len(frame))
        return probabilities, elapsed

    def _submit_shadow(self, challenger: ModelRelease, *args: Any) -> None:
        with self._shadow_lock:
            if self._shadow_waiting >= self.settings.shadow_queue:
                self.metrics.shadow_skipped.inc()
                return
            self._shadow_waiting += 1
        try:
            self._shadow.submit(self._shadow_score, challenger, *args)
        except RuntimeError:  # shutting down
            with self._shadow_lock:
                self._shadow_waiting -= 1

    def _shadow_score(
        self,
        challenger: ModelRelease,
        frame: pd.DataFrame,
        customer_ids: list[str | None],
        rows: list[int],
        request_id: str,
        endpoint: str,
        logged_at: datetime,
    ) -> None:
        """The challenger's scores of a request copy: logged only, never returned."""
        try:
            probabilities, elapsed = self._call(challenger, frame, "shadow")
            self.log.append(
                LogBatch(
                    request_id=request_id,
                    logged_at=logged_at,
                    endpoint=endpoint,
                    role="challenger",
                    served=False,
                    model_name=challenger.name,
                    model_version=challenger.version,
                    threshold=challenger.threshold,
                    row_indices=rows,
                    customer_ids=customer_ids,
                    features=frame,
                    probabilities=probabilities,
                    latency_ms=elapsed * 1000,
                )
            )
        except Exception as error:  # noqa: BLE001 - a failing shadow never affects serving
            logger.error(
                "serving: shadow scoring of request %s by version %s failed: %s",
                request_id,
                challenger.version,
                type(error).__name__,
            )
        finally:
            with self._shadow_lock:
                self._shadow_waiting -= 1


def _prediction(
    release: ModelRelease, row: int, customer_id: str | None, probability: float, flags: list[str] | None
) -> dict[str, Any]:
    threshold = release.threshold
    prediction = {
        "row": row,
        "customer_id": customer_id,
        "probability": probability,
        "decision": None if threshold is None else int(probability >= threshold),
        "threshold": threshold,
        "model_version": release.version,
        "role": release.role,
    }
    if flags is not None:
        prediction["flags"] = flags
    return prediction
