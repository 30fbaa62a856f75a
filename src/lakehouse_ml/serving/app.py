"""The HTTP layer: a FastAPI app per :class:`ServingSettings` (``create_app``).

Endpoints: ``POST /v1/score`` (feature rows), ``POST /v1/score/customers`` (customer ids, features
from the online store), ``POST /admin/reload`` (re-resolve the aliases now), ``POST /admin/traffic``
(canary share / shadow / off), ``GET /health``, ``/ready``, ``/version``, ``/metrics``. Scoring and
admin calls need ``Authorization: Bearer <token>``, and so does ``/version`` beyond the package
version; no response names a local path. A body is read only up to ``max_body_bytes``. Every error is JSON
``{"errors": [{"field", "problem", "expected", "got"}], "request_id"}``; no stack trace ever reaches
a caller. Every response carries ``X-Request-ID``; scores carry ``X-Model-Version``.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from lakehouse_ml.serving.config import TRAFFIC_MODES, ServingSettings, Traffic
from lakehouse_ml.serving.prometheus import ServingMetrics
from lakehouse_ml.serving.request_validation import ApiProblem, problem
from lakehouse_ml.serving.scoring import ScoringService

logger = logging.getLogger("lakehouse_ml.serving.requests")

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


def _package_version() -> str:
    try:
        return version("lakehouse_ml")
    except PackageNotFoundError:
        return "unknown"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_json(payload), status_code=status, media_type="application/json", headers=headers)


def _declared_length(request: Request) -> int | None:
    """The body size a ``Content-Length`` header declares (None: absent, e.g. a chunked body)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isascii() and declared.isdigit() else None


def _request_id(scope: dict[str, Any]) -> str:
    """The caller's ``X-Request-ID`` when it is a short safe token, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if 0 < len(text) <= 64 and set(text) <= _REQUEST_ID_CHARS:
                return text
    return uuid.uuid4().hex


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
            logger.info(
                "request %s %s %d rows=%s versions=%s %.2f ms",
                context["request_id"],
                endpoint,
                status,
                context.get("rows", 0),
                context.get("versions", "-"),
                elapsed * 1000,
            )


class TrafficRequest(BaseModel):
    """``POST /admin/traffic``: how the challenger takes part from now on."""

    model_config = ConfigDict(extra="forbid", strict=True)
    mode: str = Field(json_schema_extra={"enum": list(TRAFFIC_MODES)})
    share: StrictFloat | StrictInt = Field(0.0, ge=0, le=1)


def create_app(settings: ServingSettings) -> FastAPI:
    """The scoring service for ``settings``; releases load on startup, the log flushes on shutdown."""
    metrics = ServingMetrics()
    service = ScoringService(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await run_in_threadpool(service.start)
        service.limit_threads()  # on the event loop's thread, which runs the model calls
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(title="lakehouse_ml scoring service", version=_package_version(), lifespan=lifespan)
    app.state.service = service
    app.add_middleware(RequestContext, metrics=metrics)

    def context(request: Request) -> dict[str, Any]:
        return request.scope.get("state", {}).get("context") or {"request_id": uuid.uuid4().hex}

    def error(
        request: Request, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> Response:
        return _json({"errors": errors, "request_id": context(request)["request_id"]}, status, headers)

    def too_large(got: Any) -> ApiProblem:
        # Connection: close: the server then stops receiving the rest of the body instead of draining it.
        return ApiProblem(
            413,
            [problem("body", "too_large", f"at most {settings.max_body_bytes} bytes", got)],
            {"Connection": "close"},
        )

    def authorize(request: Request) -> None:
        if settings.token is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.token.encode()):
            got = "missing" if not scheme else "an invalid token"
            raise ApiProblem(
                401,
                [problem("Authorization", "auth", "header 'Authorization: Bearer <token>'", got)],
                {"WWW-Authenticate": "Bearer"},
            )

    async def body(request: Request) -> bytes:
        """The body, read chunk by chunk and refused as soon as it passes ``max_body_bytes``: a chunked
        body declares no length, and buffering it whole first would let any caller fill the memory."""
        declared = _declared_length(request)
        if declared is not None and declared > settings.max_body_bytes:
            raise too_large(declared)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise too_large(f"more than {settings.max_body_bytes} bytes (the rest was not read)")
            chunks.append(chunk)
        return b"".join(chunks)

    def serving_state() -> Any:
        state = service.releases.state  # one snapshot for the whole request
        if state.champion is None or state.validator is None:
            raise ApiProblem(
                503,
                [
                    problem(
                        "model",
                        "unavailable",
                        f"a '{settings.aliases['champion']}' alias on {settings.model_name}",
                        None,
                    )
                ],
            )
        return state

    def scored(
        request: Request, predictions: list[dict[str, Any]], errors: list[dict[str, Any]] | None = None
    ) -> Response:
        versions = sorted({p["model_version"] for p in predictions})
        ctx = context(request)
        ctx["rows"], ctx["versions"] = len(predictions), ",".join(versions)
        payload = {"request_id": ctx["request_id"], "model_name": settings.model_name, "predictions": predictions}
        if errors:
            payload["errors"] = errors
        return _json(payload, headers={"X-Model-Version": ",".join(versions)})

    # ---------------------------------------------------------------- error handlers

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> Response:
        return error(request, exc.status, exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            problem(
                ".".join(str(p) for p in e.get("loc", ()) if p != "body") or None,
                e.get("type", "invalid"),
                e.get("msg", ""),
                e.get("input"),
            )
            for e in exc.errors()
        ]
        return error(request, 422, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not_found", 405: "method"}.get(exc.status_code, "http")
        expected = "one of the service's endpoints (see /docs)" if exc.status_code == 404 else str(exc.detail)
        return error(
            request,
            exc.status_code,
            [problem("path", kind, expected, f"{request.method} {request.url.path}")],
            getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        request_id = context(request)["request_id"]
        logger.error("request %s failed: %s", request_id, type(exc).__name__, exc_info=exc)
        return error(
            request,
            500,
            [
                problem(
                    None,
                    "internal",
                    "a request the service can answer; the failure is logged under the request id",
                    None,
                )
            ],
        )

    # ---------------------------------------------------------------- scoring

    @app.post("/v1/score", summary="Score rows of model inputs", tags=["scoring"])
    async def score(request: Request) -> Response:
        authorize(request)
        data = await body(request)
        state = serving_state()
        rows = state.validator.parse(data)
        return scored(request, service.score_rows(state, rows, context(request)["request_id"]))

    @app.post(
        "/v1/score/customers",
        summary="Score customers with their online features",
        tags=["scoring"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": service.customer_ids.request_model.model_json_schema()}},
            }
        },
    )
    async def score_customers(request: Request) -> Response:
        authorize(request)
        data = await body(request)
        state = serving_state()
        ids = service.customer_ids.parse(data)
        predictions, errors = service.score_customers(state, ids, context(request)["request_id"])
        return scored(request, predictions, errors)

    # ---------------------------------------------------------------- release control

    @app.post("/admin/reload", summary="Re-resolve the aliases now; load, check and swap what changed", tags=["admin"])
    async def reload(request: Request) -> Response:
        authorize(request)
        outcome = await run_in_threadpool(service.releases.refresh)
        failed = any("error" in outcome[role] for role in ("champion", "challenger"))
        metrics.reloads.labels(outcome="failed" if failed else ("changed" if outcome["changed"] else "unchanged")).inc()
        return _json({"request_id": context(request)["request_id"], **outcome}, 409 if failed else 200)

    @app.post("/admin/traffic", summary="Set the challenger's part: off, canary (share) or shadow", tags=["admin"])
    async def traffic(request: Request) -> Response:
        authorize(request)
        data = await body(request)
        try:
            wanted = TrafficRequest.model_validate_json(data)
        except ValidationError as exc:
            raise ApiProblem(
                422,
                [
                    problem(".".join(map(str, e["loc"])) or None, e["type"], e["msg"], e.get("input"))
                    for e in exc.errors()
                ],
            ) from None
        if wanted.mode not in TRAFFIC_MODES:  # checked here, not by Traffic: its message would echo the value whole
            raise ApiProblem(422, [problem("mode", "allowed_values", f"one of {list(TRAFFIC_MODES)}", wanted.mode)])
        new = Traffic(mode=wanted.mode, share=float(wanted.share))
        service.releases.set_traffic(new)
        logger.info(
            "serving: traffic set to %s share %.4f by request %s", new.mode, new.share, context(request)["request_id"]
        )
        return _json({"request_id": context(request)["request_id"], "mode": new.mode, "share": new.share})

    # ---------------------------------------------------------------- probes and information

    @app.get("/health", summary="Liveness", tags=["probes"])
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/ready", summary="Readiness: the champion and the online store are loaded", tags=["probes"])
    async def ready() -> Response:
        reasons = []
        if service.releases.state.champion is None:
            reasons.append(f"no '{settings.aliases['champion']}' release of {settings.model_name} loaded")
        if settings.online_store:
            tables = await run_in_threadpool(service.store_tables)
            if service.store_error:
                reasons.append(f"online store: {service.store_error}")
            reasons += [
                f"online store: table {t} never published" for t in service.tables if tables and tables.get(t) is None
            ]
        return _json({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)

    @app.get(
        "/version",
        summary="The package version; with the token also the releases, the inputs and the online store's tables",
        tags=["probes"],
    )
    async def version_info(request: Request) -> Response:
        # Without credentials only the package version: releases, threshold and inputs are for callers
        # of the service. Credentials that are wrong get 401, as everywhere.
        if "authorization" not in request.headers and settings.token is not None:
            return _json({"service": _package_version()})
        authorize(request)
        state = service.releases.state
        tables = await run_in_threadpool(service.store_tables)
        return _json(
            {
                "service": _package_version(),
                "env": settings.env,
                "model_name": settings.model_name,
                "champion": state.champion.describe() if state.champion else None,
                "challenger": state.challenger.describe() if state.challenger else None,
                "traffic": {"mode": state.traffic.mode, "share": state.traffic.share},
                "inputs": [
                    {"name": f.name, "expected": f.expected, "required": f.required} for f in state.validator.fields
                ]
                if state.validator
                else [],
                "max_batch_size": settings.max_batch_size,
                "max_body_bytes": settings.max_body_bytes,
                "max_string_length": settings.max_string_length,
                "on_contract_violation": settings.on_contract_violation,
                # The backend kind, never its options: a path or a connection string is the operator's business.
                "online_store": {
                    "backend": settings.online_store.get("type") if settings.online_store else None,
                    "error": service.store_error,
                    "tables": tables,
                },
            }
        )

    @app.get("/metrics", summary="Prometheus metrics", tags=["probes"])
    async def prometheus() -> Response:
        metrics.log_pending.set(service.log.pending_rows)
        return Response(metrics.render(), media_type=metrics.content_type)

    def openapi() -> dict[str, Any]:
        """The OpenAPI document, with ``/v1/score``'s body generated from the serving champion."""
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        validator = service.releases.state.validator
        if validator is not None:
            body_schema = validator.openapi_schema()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(body_schema.pop("$defs", {}))
            schema["components"]["schemas"]["ScoreRequest"] = body_schema
            schema["paths"]["/v1/score"]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}}},
            }
        return schema

    app.openapi = openapi
    return app
