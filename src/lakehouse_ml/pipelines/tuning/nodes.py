"""Tuning nodes: an Optuna study over the model families (folds: ``modeling.folds``, models: ``modeling.models``).

Each Optuna trial is logged as its own nested MLflow run, created with the client under an explicit
parent (``mlflow.parentRunId``), never through the thread-local fluent run stack, so trials fitted
in worker threads (``n_jobs``) log safely.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime
from typing import Any

import numpy as np
import optuna
import pandas as pd
import sqlalchemy.exc
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from lakehouse_ml.features.tables import CUTOFF, LABEL, contract_configs
from lakehouse_ml.modeling.folds import Fold, in_key_order, time_folds
from lakehouse_ml.modeling.guards import constant_features, feature_problem, raise_problems

# Models registered before the model's construction moved to lakehouse_ml.modeling.models were
# pickled with these transformers under this module's name: keep that name loadable.
from lakehouse_ml.modeling.models import as_category, as_float, build_model_pipeline, feature_columns, infer_columns  # noqa: F401
from lakehouse_ml.tracking import PARENT_TAG

logger = logging.getLogger(__name__)

# Fits a batch of drawn (family, params) elsewhere: per configuration, its fold scores (an
# iterable that raises ValueError where the fit failed) and the fit's duration in seconds.
BatchFitter = Callable[[list[tuple[str, dict[str, Any]]]], list[tuple[Iterable[float], float]]]


# ---------------------------------------------------------------- the study


def suggest(trial: optuna.Trial, search_space: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A family and its hyperparameters drawn from the configured search space."""
    family = trial.suggest_categorical("family", list(search_space["family"]))
    params = {}
    for name, spec in (search_space.get(family) or {}).items():
        key = f"{family}__{name}"  # namespaced: families may share a name with other ranges
        if "choices" in spec:
            params[name] = trial.suggest_categorical(key, list(spec["choices"]))
        elif (
            spec.get("type", "int" if isinstance(spec["low"], int) and isinstance(spec["high"], int) else "float")
            == "int"
        ):
            params[name] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
        else:
            params[name] = trial.suggest_float(
                key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
    return family, params


def _fold_auc(model: Pipeline, train: pd.DataFrame, valid: pd.DataFrame, features: list[str]) -> float:
    """Fit on the training rows, ROC AUC on the validation rows."""
    if train[LABEL].nunique() < 2 or valid[LABEL].nunique() < 2:
        raise ValueError("a fold's training or validation rows hold a single class; ROC AUC is undefined")
    model.fit(train[features], train[LABEL])
    return float(roc_auc_score(valid[LABEL], model.predict_proba(valid[features])[:, 1]))


def _with_seed(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """The trial's params plus the seed (every family draws random numbers)."""
    return {**params, "random_state": seed}


class _TrialRun:
    """One trial's nested MLflow run under an explicit parent; a no-op without a parent."""

    def __init__(self, parent_run_id: str | None, trial: optuna.Trial, study_name: str) -> None:
        """Create the child run (or nothing when ``parent_run_id`` is None)."""
        self.client = self.run_id = None
        if parent_run_id is None:
            return
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        parent = self.client.get_run(parent_run_id)
        run = self.client.create_run(
            parent.info.experiment_id,
            run_name=f"{study_name}-trial-{trial.number}",
            tags={PARENT_TAG: parent_run_id, "optuna.study": study_name, "optuna.trial": str(trial.number)},
        )
        self.run_id = run.info.run_id

    def log(self, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None, step: int = 0) -> None:
        """Log params and metrics to the child run."""
        if self.client is None:
            return
        for key, value in (params or {}).items():
            self.client.log_param(self.run_id, key, value)
        for key, value in (metrics or {}).items():
            self.client.log_metric(self.run_id, key, value, step=step)

    def end(self, state: str, duration_s: float) -> None:
        """Record the Optuna state and duration and terminate the run."""
        if self.client is None:
            return
        self.client.log_metric(self.run_id, "duration_s", duration_s)
        self.client.set_tag(self.run_id, "optuna.state", state)
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.client.set_terminated(self.run_id, status=status)


def fold_scores(
    train: pd.DataFrame, folds: list[Fold], columns: dict[str, Any], family: str, params: dict[str, Any], seed: int
) -> Iterator[float]:
    """Validation ROC AUC of each fold, in fold order; lazy, so a pruned trial fits no further fold."""
    features = [*columns["numeric"], *columns["categorical"]]
    for train_cutoffs, valid_cutoffs in folds:
        model = build_model_pipeline(
            family, _with_seed(params, seed), columns["numeric"], columns["categorical"], columns["imputation"]
        )
        yield _fold_auc(
            model, train[train[CUTOFF].isin(train_cutoffs)], train[train[CUTOFF].isin(valid_cutoffs)], features
        )


def _evaluator(
    train: pd.DataFrame,
    folds: list[Fold],
    tuning: dict,
    parent_run_id: str | None,
    study_name: str,
    columns: dict[str, Any],
):
    """Evaluate a trial's drawn configuration: mean validation ROC AUC over the folds, reported
    after each fold so the pruner can stop it. Returns ``(state, value)``; never raises for a
    configuration that cannot be scored (``ValueError``), which ends as ``FAIL``.

    ``scores`` are the fold scores when they were computed elsewhere (on Spark executors, see
    ``executors.py``): they are reported and pruned on exactly as if fitted here, so both paths
    give the same trials."""
    seed = int(tuning["seed"])

    def evaluate(
        trial: optuna.Trial,
        family: str,
        params: dict[str, Any],
        scores: Iterable[float] | None = None,
        duration_s: float | None = None,
    ) -> tuple[str, float | None]:
        started = time.monotonic()
        run = _TrialRun(parent_run_id, trial, study_name)
        state, seen = "FAIL", []
        try:
            run.log(params={"family": family, **params})
            for k, auc in enumerate(
                fold_scores(train, folds, columns, family, params, seed) if scores is None else scores
            ):
                seen.append(auc)
                running = float(np.mean(seen))
                run.log(metrics={f"fold_{k}_roc_auc": auc, "running_mean_roc_auc": running}, step=k)
                trial.report(running, step=k)
                if trial.should_prune():
                    state = "PRUNED"
                    logger.debug("trial %d pruned after fold %d: running mean ROC AUC %.4f", trial.number, k, running)
                    return state, running
            mean = float(np.mean(seen))
            run.log(metrics={"mean_roc_auc": mean})
            state = "COMPLETE"
            return state, mean
        except ValueError as error:
            logger.warning("trial %d (%s %s) failed: %s", trial.number, family, params, error)
            return state, None
        finally:
            run.end(state, time.monotonic() - started if duration_s is None else duration_s)

    return evaluate


def _trial_sampler(seed: int, number: int) -> optuna.samplers.TPESampler:
    """A TPE sampler for trial ``number``, seeded by the study's seed and that number: the draws
    then depend on the seed, the trial numbers and the trials in the storage only, not on how many
    trials this process drew before, so a study interrupted between batches and resumed by another
    process draws what an uninterrupted run would, and processes sharing a study (each trial
    number is given once) never draw the same configuration by sharing a seed."""
    entropy = np.random.SeedSequence([seed, number]).generate_state(1)[0]
    return optuna.samplers.TPESampler(seed=int(entropy))


def _seconds(value: Any) -> float | None:
    """A duration setting in seconds (None: never)."""
    return None if value is None else float(value)


def _holds_budget(trial: optuna.trial.FrozenTrial, stale_after_s: float | None) -> bool:
    """Whether a stored trial takes a slot of ``n_trials``: finished, or running in a live process.

    A trial RUNNING for longer than ``tuning.stale_trial_after_s`` belongs to a process that died
    without telling it (killed, or its connection lost): it holds no slot, so a resumed study
    still reaches ``n_trials``. With the setting null every RUNNING trial holds its slot. Optuna
    stamps a trial's start with its machine's local clock: machines sharing a study need clocks
    in one time zone.
    """
    if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
        return True
    if trial.state != optuna.trial.TrialState.RUNNING:
        return False
    started = trial.datetime_start
    return stale_after_s is None or started is None or (datetime.now() - started).total_seconds() < stale_after_s


def _optimize_in_batches(  # noqa: PLR0913 - the study loop's budget, pool and callbacks, passed explicitly
    study: optuna.Study,
    evaluate,
    search_space: dict,
    n_trials: int,
    timeout_s: float | None,
    n_jobs: int,
    callback,
    fit_batch: BatchFitter | None = None,
    *,
    budget: int | None = None,
    seed: int | None = None,
    stale_after_s: float | None = None,
) -> None:
    """Run ``n_trials`` trials, ``n_jobs`` at a time, reproducibly.

    Each batch is asked and its configurations drawn in this thread, in trial order; only the
    fitting runs in parallel, and the results are told back in trial order. TPE draws then depend
    only on the seed and the finished trials, never on thread timing, so ``n_jobs: 2`` reproduces
    a run as exactly as ``n_jobs: 1`` (the median pruner compares with completed trials only,
    which are told between batches). ``timeout_s`` is checked before each batch. With ``seed``,
    each trial gets its own sampler (:func:`_trial_sampler`), so resuming reproduces too.

    ``budget`` is the study's ``n_trials`` across every process working on it (a shared storage):
    a batch only takes the slots no stored trial holds, and a trial another process asked at the
    same moment that would go past the budget is told FAIL at once (tagged ``over_budget``), so
    the study ends with exactly ``budget`` finished trials.

    ``fit_batch`` computes a batch's fold scores elsewhere (Spark executors); without it the
    trials are fitted in ``n_jobs`` local threads.
    """
    started = time.monotonic()
    told = 0
    # Histogram gradient boosting fits with OpenMP on every core: n_jobs parallel fits would put
    # n_jobs x cores threads on the cores (measured 0.7x slower than n_jobs 1 on 2 cores). Each
    # trial thread gets its share; OpenMP thread limits are per calling thread.
    threads_per_trial = max(1, (os.cpu_count() or 1) // max(1, n_jobs))

    def evaluate_with_share(trial, family, params):
        with threadpool_limits(limits=threads_per_trial, user_api="openmp"):
            return evaluate(trial, family, params)

    with ThreadPoolExecutor(max_workers=max(1, n_jobs), thread_name_prefix="trial") as pool:
        while told < n_trials and (timeout_s is None or time.monotonic() - started < timeout_s):
            size = min(max(1, n_jobs), n_trials - told)
            if budget is not None:
                stored = study.get_trials(deepcopy=False)
                size = min(size, budget - sum(_holds_budget(t, stale_after_s) for t in stored))
                if size <= 0:
                    break  # the remaining slots are being fitted by other processes
            batch, outcomes, error = [], [], None
            try:
                for _ in range(size):
                    # TPE draws twice: the relative (multivariate) draw when the trial is asked, the
                    # independent one when a parameter is suggested. Seeded for the number the trial
                    # will get, then again for the number it got (another process may have asked in
                    # between): one process always has them equal, so resuming reproduces.
                    predicted = len(study.get_trials(deepcopy=False))
                    if seed is not None:
                        study.sampler = _trial_sampler(seed, predicted)
                    trial = study.ask()
                    if seed is not None and trial.number != predicted:
                        study.sampler = _trial_sampler(seed, trial.number)
                    batch.append((trial, suggest(trial, search_space)))
                if budget is not None:
                    batch = _within_budget(study, batch, budget, stale_after_s)
                if fit_batch is None:
                    futures = [
                        pool.submit(evaluate_with_share, trial, family, params) for trial, (family, params) in batch
                    ]
                    # Every fit ends before any trial is told: a trial whose fit raised fails alone.
                    wait(futures)
                    outcomes = [future.exception() or future.result() for future in futures]
                else:
                    fitted = fit_batch([config for _, config in batch])
                    # Every trial of the batch reports before any is told, as with threads: the
                    # pruner then sees the same completed trials on both paths.
                    for (trial, (family, params)), (scores, duration_s) in zip(batch, fitted):
                        outcomes.append(evaluate(trial, family, params, scores, duration_s))
            except BaseException as raised:  # noqa: BLE001 - re-raised after the finished trials are recorded
                error = raised
            for index, (trial, _) in enumerate(batch):
                outcome = outcomes[index] if index < len(outcomes) else None
                if outcome is None or isinstance(outcome, BaseException):
                    # Raised (not a configuration that cannot be scored): the trial fails, the run stops.
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    error = error or outcome
                    continue
                state, value = outcome
                if state == "COMPLETE":
                    frozen = study.tell(trial, value)
                else:
                    frozen = study.tell(trial, state=optuna.trial.TrialState[state])
                told += 1
                callback(study, frozen)
            if error is not None:
                raise error
            if not batch:
                break  # other processes took every slot this batch asked for


def _within_budget(study: optuna.Study, batch: list, budget: int, stale_after_s: float | None) -> list:
    """The asked trials that fit in the budget; the others (another process asked for the same
    last slots at the same moment) are told FAIL now, before any fit, tagged ``over_budget``."""
    stored = study.get_trials(deepcopy=False)
    kept = []
    for trial, config in batch:
        ahead = sum(_holds_budget(t, stale_after_s) for t in stored if t.number < trial.number)
        if ahead < budget:
            kept.append((trial, config))
            continue
        trial.set_user_attr("over_budget", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return kept


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count towards the budget: completed or pruned (failed ones are retried)."""
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


def _progress(n_trials: int, started: float):
    """An Optuna callback logging one line per finished trial: best so far, done/left, elapsed."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = len(_finished(study))
        best = (
            study.best_value
            if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
            else float("nan")
        )
        logger.info(
            "tuning %s: trial %d %s (value %s) | best %.4f | %d done, %d left | %.1fs elapsed",
            study.study_name,
            trial.number,
            trial.state.name,
            trial.value,
            best,
            done,
            max(0, n_trials - done),
            time.monotonic() - started,
        )

    return callback


def _trial_summary(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Number, state, family and value of a trial (a pruned trial's last reported value)."""
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    duration = trial.duration.total_seconds() if trial.duration else None
    return {
        "number": trial.number,
        "state": trial.state.name,
        "family": trial.params.get("family"),
        "value": value,
        "duration_s": duration,
    }


def _model_params(best_params: dict[str, Any]) -> dict[str, Any]:
    """The winning family's hyperparameters without the ``<family>__`` namespace Optuna stores."""
    prefix = f"{best_params['family']}__"
    return {k.removeprefix(prefix): v for k, v in best_params.items() if k.startswith(prefix)}


def _refuse_moved_settings(tuning: dict[str, Any]) -> None:
    """Fail on settings that moved out of ``tuning``, saying where they went."""
    if "extra_numeric" in tuning:
        raise ValueError(
            "tuning.extra_numeric: no longer read; declare the feature in on_demand_features "
            "(conf/<env>/parameters_on_demand_features.yml), numeric or categorical by its type"
        )
    if "storage" in tuning:
        raise ValueError(
            "tuning.storage: no longer read; the study storage is the catalog entry `optuna_storage` "
            "(conf/<env>/catalog*.yml: `url`, and `credentials: optuna_storage` for a database server, "
            "its username and password in conf/<env>/credentials.yml)"
        )


def _storage_failure(storage: str | optuna.storages.BaseStorage | None, error: Exception) -> Exception:
    """A database error mid-run as an error naming the storage (never its password) and the setting."""
    from lakehouse_ml.datasets.optuna_storage import ENTRY, OptunaStorageError, storage_label

    url = storage if isinstance(storage, str) else getattr(storage, "url", None)
    label = storage_label(url) if url else "in memory"
    return OptunaStorageError(
        f"Optuna study storage {label}: {type(error).__name__} mid-run (a lost connection?); the trials told "
        f"before it are kept and a re-run resumes the study. Check the server behind the catalog entry "
        f"`{ENTRY}`'s `url`"
    )


def run_study(
    train: pd.DataFrame,
    folds: list[Fold],
    search_space: dict,
    tuning: dict,
    parent_run_id: str | None,
    columns: dict[str, Any] | None = None,
    fit_batch: BatchFitter | None = None,
    storage: str | optuna.storages.BaseStorage | None = None,
) -> dict:
    """Run (or resume) the Optuna study up to ``n_trials`` finished trials; best params, value and counts.

    ``storage`` is where the study lives (the ``optuna_storage`` catalog entry loads it; a URL
    string works too, ``None`` keeps it in memory). ``columns`` (numeric, categorical, imputation)
    comes from :func:`feature_columns`; without it the columns are inferred from the dtypes with
    median imputation. ``n_jobs`` trials are fitted at a time, reproducibly (see
    :func:`_optimize_in_batches`): in local threads, or by ``fit_batch`` (Spark executors) when
    given. Several processes may work on one study in a shared storage: together they stop at
    ``n_trials``. A database error mid-run fails naming the storage.
    """
    _refuse_moved_settings(tuning)
    try:
        return _run_study(
            train, folds, search_space, tuning, parent_run_id, columns or infer_columns(train), fit_batch, storage
        )
    # Optuna's RDB storage reports a lost database as StorageInternalError (SQLAlchemy's error
    # inside); not chained: the driver's message may echo the connection string.
    except (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError) as error:
        raise _storage_failure(storage, error) from None


def _run_study(
    train: pd.DataFrame,
    folds: list[Fold],
    search_space: dict,
    tuning: dict,
    parent_run_id: str | None,
    columns: dict[str, Any],
    fit_batch: BatchFitter | None,
    storage: str | optuna.storages.BaseStorage | None,
) -> dict:
    """:func:`run_study` without the storage error translation."""
    seed, n_trials = int(tuning["seed"]), int(tuning["n_trials"])
    pruner_config = tuning.get("pruner") or {}
    study = optuna.create_study(
        study_name=tuning["study_name"],
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=_trial_sampler(seed, 0),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=int(pruner_config.get("n_startup_trials", 5)),
            n_warmup_steps=int(pruner_config.get("n_warmup_steps", 0)),
        ),
    )
    before = len(study.trials)
    remaining = max(0, n_trials - len(_finished(study)))
    started = time.monotonic()
    _optimize_in_batches(
        study,
        _evaluator(train, folds, tuning, parent_run_id, study.study_name, columns),
        search_space,
        remaining,
        tuning.get("timeout_s"),
        int(tuning.get("n_jobs", 1)),
        _progress(n_trials, started),
        fit_batch,
        budget=n_trials,
        stale_after_s=_seconds(tuning.get("stale_trial_after_s")),
        seed=seed,
    )
    counts = {
        state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in optuna.trial.TrialState
    }
    completed = counts["complete"] > 0
    result = {
        "study_name": study.study_name,
        "best_params": study.best_params if completed else {},
        "best_value": study.best_value if completed else None,
        "best_family": study.best_params["family"] if completed else None,
        "best_model_params": _model_params(study.best_params) if completed else {},
        "best_trial": study.best_trial.number if completed else None,
        "n_trials": len(study.trials),
        "trial_counts": counts,
        "trials_this_run": len(study.trials) - before,
        "trials": [_trial_summary(t) for t in study.get_trials(deepcopy=False)],
        # The model inputs of every trial (constant features left out): training fits on the same.
        "columns": columns,
    }
    logger.info(
        "tuning %s finished: best %s = %s; %d trials (%s) in %.1fs",
        study.study_name,
        result["best_params"],
        result["best_value"],
        result["n_trials"],
        ", ".join(f"{k} {v}" for k, v in counts.items() if v),
        time.monotonic() - started,
    )
    return result


# ---------------------------------------------------------------- pipeline nodes


def prepare_tuning(
    training_set: pd.DataFrame,
    feature_tables: dict[str, Any],
    on_demand_features: dict[str, Any] | None,
    tuning: dict[str, Any],
) -> tuple[pd.DataFrame, list[Fold], list[Any], dict[str, Any]]:
    """The tuning rows (test window removed), the folds, the test cutoffs and the feature columns.

    Fails when a feature is all-null in the tuning rows; a constant one is left out of the model
    with a warning (or fails: ``tuning.guards.constant_features``).
    """
    _refuse_moved_settings(tuning)
    folds, test = time_folds(
        training_set[CUTOFF].tolist(),
        int(tuning["n_folds"]),
        int(tuning["test_cutoffs"]),
        int(tuning.get("gap_cutoffs", 0)),
    )
    train = in_key_order(training_set[~training_set[CUTOFF].isin(test)])
    columns = feature_columns(list(training_set.columns), contract_configs(feature_tables), on_demand_features)
    columns = _without_constant_features(
        train, columns, (tuning.get("guards") or {}).get("constant_features", "leave_out")
    )
    logger.info(
        "tuning: %d rows in %d folds, %d test cutoffs held out, %d numeric and %d categorical features",
        len(train),
        len(folds),
        len(test),
        len(columns["numeric"]),
        len(columns["categorical"]),
    )
    return train, folds, test, columns


def _without_constant_features(train: pd.DataFrame, columns: dict[str, Any], policy: str) -> dict[str, Any]:
    """``columns`` without the features constant in ``train`` (``leave_out``), or a failure naming them
    (``fail``); an all-NULL feature always fails."""
    if policy not in ("leave_out", "fail"):
        raise ValueError(f"tuning.guards.constant_features: expected leave_out or fail, got {policy!r}")
    features = [*columns["numeric"], *columns["categorical"]]
    constant = constant_features(train, features, columns["imputation"])
    raise_problems([feature_problem(train, features, constant if policy == "fail" else None)], "tuning")
    if not constant:
        return columns
    # Only orders delivered: the session and ticket windows are 0 throughout and mean nothing.
    logger.warning(
        "tuning: %d feature(s) hold one value in every training row and are left out of the model: %s "
        "(a source that delivered nothing?); tuning.guards.constant_features: fail stops instead",
        len(constant),
        ", ".join(f"{name} = {value!r}" for name, value in constant.items()),
    )
    return {
        "numeric": [c for c in columns["numeric"] if c not in constant],
        "categorical": [c for c in columns["categorical"] if c not in constant],
        "imputation": {c: v for c, v in columns["imputation"].items() if c not in constant},
        "left_out": {c: f"one value in every training row: {v!r}" for c, v in constant.items()},
    }


def tune(
    train: pd.DataFrame,
    folds: list[Fold],
    columns: dict[str, Any],
    tuning: dict[str, Any],
    optuna_storage: optuna.storages.BaseStorage | str | None,
    run: dict[str, Any] | None,
) -> dict:
    """Run the study in ``optuna_storage`` (the catalog entry) with trials nested under ``run``,
    this node's MLflow run (``None`` without tracking).

    ``tuning.executor`` says where trials are fitted: ``threads`` (local), ``spark`` (Spark tasks),
    or ``auto``: Spark tasks when the engine runs Python on executors, else local threads.
    """
    from lakehouse_ml.pipelines.tuning.executors import batch_fitter

    _refuse_moved_settings(tuning)  # before the engine starts
    fit_batch = batch_fitter(str(tuning.get("executor", "auto")), train, folds, columns, int(tuning["seed"]))
    return run_study(
        train,
        folds,
        tuning["search_space"],
        tuning,
        run["run_id"] if run else None,
        columns,
        fit_batch,
        optuna_storage,
    )
