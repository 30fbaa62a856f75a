"""How the service answers: JSON responses, and the exception handlers that turn every failure into
``{"errors": [{"field", "problem", "expected", "got"}], "request_id"}`` (never a stack trace)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from lakehouse_ml.serving.request_context import request_context, request_log
from lakehouse_ml.serving.request_validation import ApiProblem, problem


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``payload`` as a JSON response."""
    return Response(to_json(payload), status_code=status, media_type="application/json", headers=headers)


def error_response(
    request: Request, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> Response:
    """The error body every refusal has: the entries and the request id."""
    return json_response({"errors": errors, "request_id": request_context(request)["request_id"]}, status, headers)


async def _api_problem(request: Request, exc: ApiProblem) -> Response:
    return error_response(request, exc.status, exc.errors, exc.headers)


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
    return error_response(request, 422, errors)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    kind = {404: "not_found", 405: "method"}.get(exc.status_code, "http")
    expected = "one of the service's endpoints (see /docs)" if exc.status_code == 404 else str(exc.detail)
    return error_response(
        request,
        exc.status_code,
        [problem("path", kind, expected, f"{request.method} {request.url.path}")],
        getattr(exc, "headers", None),
    )


async def _internal(request: Request, exc: Exception) -> Response:
    request_id = request_context(request)["request_id"]
    request_log.error("request %s failed: %s", request_id, type(exc).__name__, exc_info=exc)
    return error_response(
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


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiProblem: _api_problem,
    RequestValidationError: _request_validation,
    StarletteHTTPException: _http_error,
    Exception: _internal,
}
