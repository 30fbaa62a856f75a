"""``POST /v1/score`` (rows of model inputs) and ``POST /v1/score/customers`` (customer ids, features
from the online store); both need the bearer token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from lakehouse_ml.serving.auth import require_token
from lakehouse_ml.serving.dependencies import Body, Service, State
from lakehouse_ml.serving.request_context import request_context
from lakehouse_ml.serving.responses import json_response

router = APIRouter(tags=["scoring"], dependencies=[Depends(require_token)])


def _scored(
    request: Request,
    model_name: str,
    predictions: list[dict[str, Any]],
    errors: list[dict[str, Any]] | None = None,
) -> Response:
    """The scores, with the versions that made them in ``X-Model-Version`` and the request's log line."""
    versions = sorted({p["model_version"] for p in predictions})
    ctx = request_context(request)
    ctx["rows"], ctx["versions"] = len(predictions), ",".join(versions)
    payload = {"request_id": ctx["request_id"], "model_name": model_name, "predictions": predictions}
    if errors:
        payload["errors"] = errors
    return json_response(payload, headers={"X-Model-Version": ",".join(versions)})


# The parameters' order is the checks' order (token, body size, a champion), as FastAPI resolves them.
@router.post("/v1/score", summary="Score rows of model inputs")
async def score(request: Request, data: Body, state: State, service: Service) -> Response:
    rows = state.validator.parse(data)
    return _scored(
        request, service.settings.model_name, service.score_rows(state, rows, request_context(request)["request_id"])
    )


# Its request body is documented by the app's OpenAPI document (it depends on the service's settings).
@router.post("/v1/score/customers", summary="Score customers with their online features")
async def score_customers(request: Request, data: Body, state: State, service: Service) -> Response:
    ids = service.customer_ids.parse(data)
    predictions, errors = service.score_customers(state, ids, request_context(request)["request_id"])
    return _scored(request, service.settings.model_name, predictions, errors)
