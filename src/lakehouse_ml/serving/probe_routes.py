"""Probes and information: ``GET /health``, ``/ready``, ``/version`` and ``/metrics``. None needs the
token; ``/version`` tells only the package version without it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from lakehouse_ml.serving.auth import caller_authorized
from lakehouse_ml.serving.dependencies import Loaded, Service
from lakehouse_ml.serving.responses import json_response

router = APIRouter(tags=["probes"])


def package_version() -> str:
    """The installed ``lakehouse_ml`` version, or ``unknown``."""
    try:
        return version("lakehouse_ml")
    except PackageNotFoundError:
        return "unknown"


@router.get("/health", summary="Liveness: answers from the moment the server listens, before the releases load")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/ready", summary="Readiness: the releases have loaded, with a champion, and the online store is open")
async def ready(service: Service, loaded: Loaded) -> Response:
    settings = service.settings
    if not loaded:
        return json_response({"ready": False, "reasons": ["the releases are still loading"]}, 503)
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
    return json_response({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)


@router.get(
    "/version",
    summary="The package version; with the token also the releases, the inputs and the online store's tables",
)
async def version_info(
    authorized: Annotated[bool, Depends(caller_authorized)], service: Service, loaded: Loaded
) -> Response:
    # Without credentials only the package version: releases, threshold and inputs are for callers of the service.
    if not authorized:
        return json_response({"service": package_version()})
    settings = service.settings
    state = service.releases.state
    tables = await run_in_threadpool(service.store_tables)
    return json_response(
        {
            "service": package_version(),
            "env": settings.env,
            "model_name": settings.model_name,
            "releases_loaded": loaded,  # before: no champion yet, not "no alias"
            "champion": state.champion.describe() if state.champion else None,
            "challenger": state.challenger.describe() if state.challenger else None,
            "traffic": {"mode": state.traffic.mode, "share": state.traffic.share},
            "inputs": [{"name": f.name, "expected": f.expected, "required": f.required} for f in state.validator.fields]
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


@router.get("/metrics", summary="Prometheus metrics")
async def prometheus(service: Service) -> Response:
    service.metrics.log_pending.set(service.log.pending_rows)
    return Response(service.metrics.render(), media_type=service.metrics.content_type)
