"""What the routes share, as FastAPI dependencies: the app's :class:`ScoringService` and settings
(from ``app.state``), the bounded request body and the serving releases' snapshot. They are
``async`` so they run on the event loop as the routes do, without a thread hop per request."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, Request

from lakehouse_ml.serving.config import ServingSettings
from lakehouse_ml.serving.releases import ServingState
from lakehouse_ml.serving.request_validation import ApiProblem, problem
from lakehouse_ml.serving.scoring import ScoringService


async def scoring_service(request: Request) -> ScoringService:
    """The service ``create_app`` built for this app."""
    return request.app.state.service


Service = Annotated[ScoringService, Depends(scoring_service)]


async def serving_settings(service: Service) -> ServingSettings:
    """The settings the service runs with."""
    return service.settings


Settings = Annotated[ServingSettings, Depends(serving_settings)]


def _too_large(settings: ServingSettings, got: Any) -> ApiProblem:
    # Connection: close: the server then stops receiving the rest of the body instead of draining it.
    return ApiProblem(
        413,
        [problem("body", "too_large", f"at most {settings.max_body_bytes} bytes", got)],
        {"Connection": "close"},
    )


def _declared_length(request: Request) -> int | None:
    """The body size a ``Content-Length`` header declares (None: absent, e.g. a chunked body)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isascii() and declared.isdigit() else None


async def request_body(request: Request, settings: Settings) -> bytes:
    """The body, read chunk by chunk and refused as soon as it passes ``max_body_bytes``: a chunked
    body declares no length, and buffering it whole first would let any caller fill the memory."""
    declared = _declared_length(request)
    if declared is not None and declared > settings.max_body_bytes:
        raise _too_large(settings, declared)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > settings.max_body_bytes:
            raise _too_large(settings, f"more than {settings.max_body_bytes} bytes (the rest was not read)")
        chunks.append(chunk)
    return b"".join(chunks)


Body = Annotated[bytes, Depends(request_body)]


def _loaded_event(request: Request) -> asyncio.Event | None:
    """The app's "releases loaded" event; None when its lifespan did not run (it never loads then)."""
    return getattr(request.app.state, "loaded", None)


async def releases_loaded(request: Request) -> bool:
    """Whether the first load of the releases has ended (and the model threads are capped): what
    ``/ready``, ``/version`` and scoring all go by."""
    loaded = _loaded_event(request)
    return loaded is not None and loaded.is_set()


Loaded = Annotated[bool, Depends(releases_loaded)]


def _loading(got: str) -> ApiProblem:
    return ApiProblem(
        503,
        [problem("model", "loading", "the releases loaded (the service is starting)", got)],
        {"Retry-After": "1"},
    )


async def _wait_loaded(loaded: asyncio.Event | None, settings: ServingSettings) -> None:
    """Wait, at most ``startup_wait_s``, for the first load of the releases; 503 with Retry-After after that."""
    if loaded is None:
        raise _loading("the app's lifespan did not run")
    try:
        await asyncio.wait_for(loaded.wait(), settings.startup_wait_s)
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        raise _loading(f"still loading after {settings.startup_wait_s:g} s (serving.startup_wait_s)") from None


async def serving_state(request: Request, service: Service, settings: Settings) -> ServingState:
    """One snapshot of the releases for the whole request, once they have loaded; 503 while no
    champion is loaded."""
    # The event read here, not through the Loaded dependency: one dependency fewer per scoring call.
    loaded = _loaded_event(request)
    if loaded is None or not loaded.is_set():
        await _wait_loaded(loaded, settings)
    state = service.releases.state
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


State = Annotated[ServingState, Depends(serving_state)]
