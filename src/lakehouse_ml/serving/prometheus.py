"""Prometheus metrics of one service instance (its own registry: two apps in a process never mix)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServingMetrics:
    """Requests, errors by class, latency, and per model version rows and scoring time."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "serving_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.errors = Counter(
            "serving_errors", "Failed requests by endpoint and error class", ["endpoint", "error_class"], registry=r
        )
        self.latency = Histogram(
            "serving_request_duration_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter(
            "serving_scored_rows",
            "Rows scored per model version, role and mode (served or shadow)",
            ["model_version", "role", "mode"],
            registry=r,
        )
        self.model_latency = Histogram(
            "serving_model_duration_seconds",
            "Model call latency per model version and role",
            ["model_version", "role"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.refused_rows = Counter(
            "serving_refused_rows", "Customers refused by a contract or missing from the online store", registry=r
        )
        self.model_info = Gauge(
            "serving_model_info", "Loaded releases (1 per role and version)", ["role", "model_version"], registry=r
        )
        self.canary_share = Gauge("serving_canary_share", "Share of customers answered by the challenger", registry=r)
        self.reloads = Counter("serving_reloads", "Alias refreshes by outcome", ["outcome"], registry=r)
        self.log_rows = Counter(
            "serving_inference_log_rows", "Inference log rows by outcome (flushed, dropped)", ["outcome"], registry=r
        )
        self.log_pending = Gauge("serving_inference_log_pending_rows", "Inference log rows not yet flushed", registry=r)
        self.shadow_skipped = Counter("serving_shadow_skipped", "Shadow requests skipped (queue full)", registry=r)

    def set_releases(self, versions: dict[str, str | None], share: float) -> None:
        """The loaded releases' info gauge."""
        self.model_info.clear()
        for role, version in versions.items():
            if version is not None:
                self.model_info.labels(role=role, model_version=version).set(1)
        self.canary_share.set(share)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
