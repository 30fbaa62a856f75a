"""Release control: ``POST /admin/reload`` (re-resolve the aliases now) and ``POST /admin/traffic``
(the challenger's part); both need the bearer token."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from lakehouse_ml.serving.auth import require_token
from lakehouse_ml.serving.config import TRAFFIC_MODES, Traffic
from lakehouse_ml.serving.dependencies import Body, Service
from lakehouse_ml.serving.request_context import request_context, request_log
from lakehouse_ml.serving.request_validation import ApiProblem, problem
from lakehouse_ml.serving.responses import json_response

router = APIRouter(tags=["admin"], dependencies=[Depends(require_token)])


class TrafficRequest(BaseModel):
    """``POST /admin/traffic``: how the challenger takes part from now on."""

    model_config = ConfigDict(extra="forbid", strict=True)
    mode: str = Field(json_schema_extra={"enum": list(TRAFFIC_MODES)})
    share: StrictFloat | StrictInt = Field(0.0, ge=0, le=1)


@router.post("/admin/reload", summary="Re-resolve the aliases now; load, check and swap what changed")
async def reload(request: Request, service: Service) -> Response:
    outcome = await run_in_threadpool(service.releases.refresh)
    failed = any("error" in outcome[role] for role in ("champion", "challenger"))
    service.metrics.reloads.labels(
        outcome="failed" if failed else ("changed" if outcome["changed"] else "unchanged")
    ).inc()
    return json_response({"request_id": request_context(request)["request_id"], **outcome}, 409 if failed else 200)


@router.post("/admin/traffic", summary="Set the challenger's part: off, canary (share) or shadow")
async def traffic(request: Request, data: Body, service: Service) -> Response:
    try:
        wanted = TrafficRequest.model_validate_json(data)
    except ValidationError as exc:
        raise ApiProblem(
            422,
            [problem(".".join(map(str, e["loc"])) or None, e["type"], e["msg"], e.get("input")) for e in exc.errors()],
        ) from None
    if wanted.mode not in TRAFFIC_MODES:  # checked here, not by Traffic: its message would echo the value whole
        raise ApiProblem(422, [problem("mode", "allowed_values", f"one of {list(TRAFFIC_MODES)}", wanted.mode)])
    new = Traffic(mode=wanted.mode, share=float(wanted.share))
    # In a worker thread: it waits for the releases' lock, which a load (the first one too) holds.
    await run_in_threadpool(service.releases.set_traffic, new)
    request_id = request_context(request)["request_id"]
    request_log.info("serving: traffic set to %s share %.4f by request %s", new.mode, new.share, request_id)
    return json_response({"request_id": request_id, "mode": new.mode, "share": new.share})
