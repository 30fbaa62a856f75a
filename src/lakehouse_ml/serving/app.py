"""The HTTP layer: a FastAPI app per :class:`ServingSettings` (``create_app``).

Endpoints: ``POST /v1/score`` (feature rows), ``POST /v1/score/customers`` (customer ids, features
from the online store) in :mod:`.scoring_routes`; ``POST /admin/reload`` (re-resolve the aliases
now), ``POST /admin/traffic`` (canary share / shadow / off) in :mod:`.admin_routes`; ``GET /health``,
``/ready``, ``/version``, ``/metrics`` in :mod:`.probe_routes`. Scoring and admin calls need
``Authorization: Bearer <token>`` (:mod:`.auth`), and so does ``/version`` beyond the package
version; no response names a local path. A body is read only up to ``max_body_bytes``. Every error
is JSON ``{"errors": [{"field", "problem", "expected", "got"}], "request_id"}`` (:mod:`.responses`);
no stack trace ever reaches a caller. Every response carries ``X-Request-ID``
(:mod:`.request_context`); scores carry ``X-Model-Version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi

from lakehouse_ml.serving import admin_routes, probe_routes, scoring_routes
from lakehouse_ml.serving.config import ServingSettings
from lakehouse_ml.serving.prometheus import ServingMetrics
from lakehouse_ml.serving.request_context import RequestContext
from lakehouse_ml.serving.responses import EXCEPTION_HANDLERS
from lakehouse_ml.serving.scoring import ScoringService

logger = logging.getLogger(__name__)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The releases load on a thread from startup on, the server listening meanwhile; the inference
    log flushes on shutdown."""
    service: ScoringService = app.state.service
    loop, loaded = asyncio.get_running_loop(), asyncio.Event()
    app.state.loaded = loaded

    def on_loaded() -> None:
        # On the event loop's thread, which runs the model calls, after the first load and after
        # every later change of the releases: threadpoolctl caps only the libraries already
        # loaded, and scikit-learn's OpenMP comes with the first model.
        try:
            service.limit_threads()
        except Exception:
            logger.exception("serving: the model threads could not be capped")
        finally:
            loaded.set()

    def from_any_thread() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the server stopped meanwhile
            loop.call_soon_threadsafe(on_loaded)

    service.start(on_loaded=from_any_thread)
    try:
        yield
    finally:
        await run_in_threadpool(service.stop)


def _openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the request bodies generated from the service: ``/v1/score``'s from
    the serving champion, ``/v1/score/customers``'s from the settings."""
    service: ScoringService = app.state.service
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schema["paths"]["/v1/score/customers"]["post"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": service.customer_ids.request_model.model_json_schema()}},
    }
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


def create_app(settings: ServingSettings) -> FastAPI:
    """The scoring service for ``settings``; releases load from startup on, the log flushes on shutdown."""
    metrics = ServingMetrics()
    app = FastAPI(
        title="lakehouse_ml scoring service",
        version=probe_routes.package_version(),
        lifespan=_lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.service = ScoringService(settings, metrics)
    app.add_middleware(RequestContext, metrics=metrics)
    for routes in (scoring_routes, admin_routes, probe_routes):
        app.include_router(routes.router)
    app.openapi = lambda: _openapi_document(app)
    return app
