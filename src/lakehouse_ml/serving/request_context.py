"""Per-request context: the request id, and the ASGI middleware that sets it, counts every request in
the metrics and writes one log line per request."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi import Request

from lakehouse_ml.serving.prometheus import ServingMetrics

request_log = logging.getLogger("lakehouse_ml.serving.requests")

ENDPOINTS = {
    "/v1/score",
    "/v1/score/customers",
    "/admin/reload",
    "/admin/traffic",
    "/health",
    "/ready",
    "/version",
    "/metrics",
}
_ERROR_CLASSES = {
    400: "invalid_json",
    401: "auth",
    404: "not_found",
    405: "method",
    413: "too_large",
    422: "validation",
    503: "unavailable",
}
_REQUEST_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _request_id(scope: dict[str, Any]) -> str:
    """The caller's ``X-Request-ID`` when it is a short safe token, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= 64 and set(text) <= _REQUEST_ID_CHARS:
                return text
    return uuid.uuid4().hex


def request_context(request: Request) -> dict[str, Any]:
    """The request's context (``request_id``; ``rows`` and ``versions`` once scored) set by :class:`RequestContext`."""
    return request.scope.get("state", {}).get("context") or {"request_id": uuid.uuid4().hex}


class RequestContext:
    """Pure ASGI middleware: request id, status/latency metrics and one log line per request
    (request id, endpoint, status, rows, versions, time; never payloads or tokens)."""

    def __init__(self, app: Any, metrics: ServingMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        context = {"request_id": request_id}
        scope.setdefault("state", {})["context"] = context
        status = [500]

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope["path"], status[0], time.perf_counter() - started, context)

    def _record(self, path: str, status: int, elapsed: float, context: dict[str, Any]) -> None:
        endpoint = path if path in ENDPOINTS else "other"
        self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.metrics.latency.labels(endpoint=endpoint).observe(elapsed)
        if status >= 400:
            self.metrics.errors.labels(
                endpoint=endpoint, error_class=_ERROR_CLASSES.get(status, "internal" if status >= 500 else "client")
            ).inc()
        if endpoint.startswith(("/v1/", "/admin/")) or status >= 400:
            request_log.info(
                "request %s %s %d rows=%s versions=%s %.2f ms",
                context["request_id"],
                endpoint,
                status,
                context.get("rows", 0),
                context.get("versions", "-"),
                elapsed * 1000,
            )
