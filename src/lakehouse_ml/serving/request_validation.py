"""Request validation generated from a model's signature and the feature contracts.

Every model input becomes a field: its type from the signature, required unless the signature
marks it optional, nullable unless the contract's null policy is ``drop``, bounded by the contract's
range or allowed values (an on-demand feature such as ``tenure_days``: by its declaration in
``on_demand_features``), a string by ``serving.max_string_length`` characters, a number finite. Requests are parsed by pydantic (strict: no "3" for a number, no silent
coercion; unknown fields are errors) and every problem becomes one entry
``{"field": "rows[3].customer_activity__orders_30d", "problem": "range", "expected": "number >= 0", "got": -3}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Optional

import numpy as np
import pandas as pd
from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
)

from lakehouse_ml.features.contracts import FeatureContract, FeatureSpec
from lakehouse_ml.features.on_demand import OnDemandFeature
from lakehouse_ml.features.rules import allowed_values, bounds_text, requires_value

MAX_ERRORS = 100
_GOT_CHARS = 80
_FIELD_CHARS = 120  # a field path echoes request keys: an unknown key may be as long as the body
_NUMBER_TYPES = {"double", "float"}
_INTEGER_TYPES = {"long", "integer"}


@dataclass(frozen=True)
class InputField:
    """One model input as the service accepts it."""

    name: str
    kind: str  # number | integer | string | boolean | datetime
    required: bool
    nullable: bool
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[Any, ...] | None = None
    impute: Any = None
    max_length: int | None = None

    @property
    def expected(self) -> str:
        """What a valid value looks like, in words."""
        text = {
            "number": "number",
            "integer": "integer",
            "string": "string",
            "boolean": "boolean",
            "datetime": "ISO-8601 timestamp",
        }[self.kind]
        if self.allowed is not None:
            text = f"one of {list(self.allowed)}"
        elif self.max_length is not None:
            text += f" of at most {self.max_length} characters"
        if bounds := bounds_text(self.minimum, self.maximum):
            text += f" {bounds}"
        if self.nullable:
            text += " or null" + (f" (null is imputed as {self.impute!r})" if self.impute is not None else "")
        return text


def _contract_spec(column: str, contracts: dict[str, FeatureContract]) -> FeatureSpec | None:
    """The contract feature behind a ``<table>__<feature>`` column (None for on-demand columns)."""
    table, _, feature = column.partition("__")
    contract = contracts.get(table)
    if contract is None or not contract.enabled or feature not in contract.feature_names:
        return None
    return contract.feature(feature)


def _kind(column: Any) -> str:
    name = str(getattr(column.type, "name", column.type))
    if name in _NUMBER_TYPES:
        return "number"
    if name in _INTEGER_TYPES:
        return "integer"
    if name in ("string", "boolean", "datetime"):
        return name
    raise ValueError(
        f"model input {column.name!r} has signature type {name!r}, which the service cannot accept from JSON"
    )


def input_fields(
    input_schema: Any,
    contracts: dict[str, FeatureContract],
    on_demand: dict[str, OnDemandFeature] | None = None,
    max_string_length: int | None = None,
) -> tuple[InputField, ...]:
    """The accepted fields of a model: its signature's inputs, with the promises of the contracts and
    of the on-demand features, and the service's string limit."""
    fields = []
    for column in input_schema.inputs:
        spec = _contract_spec(column.name, contracts)
        promise = spec or (on_demand or {}).get(column.name)
        kind = _kind(column)
        nullable = promise is None or not requires_value(promise)
        fields.append(
            InputField(
                name=column.name,
                kind=kind,
                required=bool(getattr(column, "required", True)) or not nullable,
                nullable=nullable,
                minimum=promise.minimum if promise else None,
                maximum=promise.maximum if promise else None,
                allowed=allowed_values(spec) if spec else None,
                impute=promise.null_policy.value if promise and promise.null_policy.action == "impute" else None,
                max_length=max_string_length if kind == "string" else None,
            )
        )
    return tuple(fields)


def _annotation(spec: InputField) -> tuple[Any, Any]:
    """The pydantic type and field info of one input."""
    if spec.allowed is not None:
        base: Any = Literal[spec.allowed]
    else:
        base = {
            "number": StrictFloat,
            "integer": StrictInt,
            "string": StrictStr,
            "boolean": StrictBool,
            "datetime": datetime,
        }[spec.kind]
    constraints: dict[str, Any] = {}
    if spec.kind in ("number", "integer"):
        constraints = {"ge": spec.minimum, "le": spec.maximum}
        if spec.kind == "number":
            constraints["allow_inf_nan"] = False
    elif spec.kind == "string" and spec.allowed is None:  # allowed values bound a string already
        constraints = {"max_length": spec.max_length}
    annotation = Optional[base] if spec.nullable else base  # noqa: UP045 - base is a value here, not a written annotation
    return annotation, Field(... if spec.required else None, **{k: v for k, v in constraints.items() if v is not None})


_STRICT = ConfigDict(extra="forbid", strict=True)


class ApiProblem(Exception):
    """A request the service refuses: an HTTP status and the offending fields."""

    def __init__(self, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {errors[:1]}")
        self.status, self.errors, self.headers = status, errors, headers or {}


def problem(field: str | None, kind: str, expected: str, got: Any = None) -> dict[str, Any]:
    """One error entry (the field path and the value cut short: a request never comes back whole)."""
    if field is not None and len(field) > _FIELD_CHARS:
        field = field[:_FIELD_CHARS] + "..."
    return {"field": field, "problem": kind, "expected": expected, "got": safe_value(got)}


def error_summary(error: BaseException) -> str:
    """An exception as a response may show it: its type only (messages can carry local paths or
    connection details; the service log has them in full)."""
    return f"{type(error).__name__} (details in the service log)"


def safe_value(value: Any) -> Any:
    """A value that can be echoed in JSON: non-finite numbers as text, containers and long text summarised."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        return f"{type(value).__name__} of {len(value)} items"
    if isinstance(value, str) and len(value) > _GOT_CHARS:
        return f"{value[:_GOT_CHARS]}... ({len(value)} characters)"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)[:_GOT_CHARS]


def field_path(loc: tuple[Any, ...]) -> str:
    """``('rows', 3, 'x')`` → ``rows[3].x``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


_PROBLEMS = {
    "missing": "missing",
    "extra_forbidden": "extra_field",
    "greater_than_equal": "range",
    "less_than_equal": "range",
    "finite_number": "range",
    "literal_error": "allowed_values",
    "too_long": "batch_size",
    "too_short": "batch_size",
    "string_too_long": "too_long",
    "json_invalid": "invalid_json",
    "json_type": "invalid_json",
}


class RequestValidator:
    """Parses ``POST /v1/score`` bodies for one model: ``{"rows": [{<input>: value, ..., "customer_id"?}]}``."""

    def __init__(self, fields: tuple[InputField, ...], max_batch_size: int, max_string_length: int = 256) -> None:
        self.fields = fields
        self.by_name = {spec.name: spec for spec in fields}
        self.max_batch_size, self.max_string_length = max_batch_size, max_string_length
        row_fields = {spec.name: _annotation(spec) for spec in fields}
        self.row_model = create_model(
            "ScoreRow",
            __config__=_STRICT,
            customer_id=(StrictStr | None, Field(None, max_length=max_string_length)),
            **row_fields,
        )
        self.request_model = create_model(
            "ScoreRequest",
            __config__=_STRICT,
            rows=(list[self.row_model], Field(min_length=1, max_length=max_batch_size)),
        )

    def openapi_schema(self) -> dict[str, Any]:
        """The request body's JSON schema (for the OpenAPI document)."""
        return self.request_model.model_json_schema(ref_template="#/components/schemas/{model}")

    def parse(self, body: bytes) -> list[dict[str, Any]]:
        """The rows as dicts of validated values, or :class:`ApiProblem` naming every offending field."""
        try:
            request = self.request_model.model_validate_json(body)
        except ValidationError as error:
            raise ApiProblem(*self._status_and_errors(error.errors(include_url=False))) from None
        return [row.__dict__ for row in request.rows]

    def _status_and_errors(self, errors: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
        entries = [self.describe(error) for error in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            entries.append(problem(None, "truncated", f"at most {MAX_ERRORS} errors listed", len(errors)))
        return _status(entries, self.max_batch_size), entries

    def describe(self, error: dict[str, Any]) -> dict[str, Any]:
        """One pydantic error as an error entry with the field's expectation."""
        loc = tuple(part for part in error.get("loc", ()) if part != "body")
        kind = _PROBLEMS.get(error["type"], "type")
        got = error.get("input")
        name = loc[-1] if loc and isinstance(loc[-1], str) else None
        if kind == "missing":
            got = None
        if kind == "type" and got is None:
            kind = "null"
        if kind == "batch_size":
            got = len(got) if isinstance(got, list) else got
            return problem(field_path(loc), kind, f"a list of 1 to {self.max_batch_size} rows", got)
        if kind == "invalid_json":
            return problem(field_path(loc) or None, kind, "a JSON object", error.get("msg"))
        if kind == "extra_field":
            return problem(
                field_path(loc), kind, "no such field: only the model's inputs (GET /version) and customer_id", got
            )
        return problem(field_path(loc) or None, kind, self._expected(loc, name), got)

    def _expected(self, loc: tuple[Any, ...], name: str | None) -> str:
        if name in self.by_name and len(loc) == 3:
            spec = self.by_name[name]
            return spec.expected + (", required" if spec.required else "")
        if name == "customer_id" and len(loc) == 3:
            return f"string of at most {self.max_string_length} characters or null (routes the canary, logged with the score)"
        if loc == ("rows",):
            return f"a list of 1 to {self.max_batch_size} rows"
        if len(loc) == 2:
            return "an object of model inputs"
        return 'a JSON object {"rows": [...]}'

    def frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        """The model's input frame: one typed column per input (nulls as NaN/None, as training read them)."""
        data = {}
        for spec in self.fields:
            values = [row.get(spec.name) for row in rows]
            data[spec.name] = (
                np.array(values, dtype=float) if spec.kind in ("number", "integer") else np.array(values, dtype=object)
            )
        return pd.DataFrame(data)

    def sample_rows(self) -> list[dict[str, Any]]:
        """Two valid rows for a release's smoke test: typical values, and every nullable input null."""
        typical = {}
        for spec in self.fields:
            if spec.allowed is not None:
                typical[spec.name] = spec.allowed[0]
            elif spec.kind in ("number", "integer"):
                typical[spec.name] = spec.minimum if spec.minimum is not None else 0.0
            else:
                typical[spec.name] = {"string": "unknown", "boolean": False, "datetime": datetime(2026, 1, 1)}[
                    spec.kind
                ]
        sparse = {name: (None if self.by_name[name].nullable else value) for name, value in typical.items()}
        return [typical, sparse]


def _status(entries: list[dict[str, Any]], max_batch_size: int) -> int:
    """400 for a body that is not JSON, 413 for too many rows, else 422."""
    if any(e["problem"] == "invalid_json" for e in entries):
        return 400
    oversized = any(
        e["problem"] == "batch_size" and isinstance(e["got"], int) and e["got"] > max_batch_size for e in entries
    )
    return 413 if oversized else 422


class CustomerIdsValidator:
    """Parses ``POST /v1/score/customers`` bodies: ``{"customer_ids": ["c-000001", ...]}``."""

    def __init__(self, max_batch_size: int, max_string_length: int = 256) -> None:
        self.max_batch_size, self.max_string_length = max_batch_size, max_string_length
        self.request_model = create_model(
            "CustomersRequest",
            __config__=_STRICT,
            customer_ids=(
                list[Annotated[StrictStr, Field(min_length=1, max_length=max_string_length)]],
                Field(min_length=1, max_length=max_batch_size),
            ),
        )

    def parse(self, body: bytes) -> list[str]:
        """The customer ids, or :class:`ApiProblem`."""
        try:
            return self.request_model.model_validate_json(body).customer_ids
        except ValidationError as error:
            entries = [self._describe(item) for item in error.errors(include_url=False)[:MAX_ERRORS]]
            raise ApiProblem(_status(entries, self.max_batch_size), entries) from None

    def _describe(self, error: dict[str, Any]) -> dict[str, Any]:
        loc, kind, got = tuple(error.get("loc", ())), _PROBLEMS.get(error["type"], "type"), error.get("input")
        if kind == "extra_field":
            return problem(field_path(loc), kind, "no such field: only customer_ids", got)
        if kind == "invalid_json":
            return problem(None, kind, "a JSON object", error.get("msg"))
        if len(loc) == 2:
            return problem(
                field_path(loc),
                "null" if got is None else kind,
                f"a customer id: a string of 1 to {self.max_string_length} characters",
                got,
            )
        got = None if kind == "missing" else (len(got) if isinstance(got, list) else got)
        return problem(field_path(loc) or None, kind, f"a list of 1 to {self.max_batch_size} customer ids", got)
