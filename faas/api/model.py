"""The Lambda wire protocol, driven by the service model that ships with botocore.

Routes, status codes and where each input member lives (path, query string, header, JSON body, raw payload)
come from `botocore/data/lambda/2015-03-31/service-2.json`, so the server answers exactly the requests the
SDKs send. Handlers are registered per operation name with `@operation("CreateFunction")`; each receives
the aiohttp request and the parsed, validated input as a dict keyed by the model's member names.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web
from botocore.loaders import Loader
from botocore.model import OperationModel, ServiceModel, Shape
from multidict import MultiMapping

from faas.api.validation import validate
from faas.errors import (
    InvalidRequestContentException,
    LambdaError,
    SerializationException,
    UnknownOperationException,
    ValidationException,
    validation_message,
)

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]
# Sees the input and the model's complaints; may raise the error AWS raises instead, or return True to accept
# the input anyway (where faas deliberately extends the model).
ValidationHook = Callable[[dict[str, Any], list[str]], "bool | None"]

_handlers: dict[str, Handler] = {}
_validation_hooks: dict[str, ValidationHook] = {}


def operation(name: str, *, on_invalid: ValidationHook | None = None) -> Callable[[Handler], Handler]:
    """Register the handler of one API operation. `on_invalid` may raise a different error than the
    generic ValidationException where AWS does (it is given the input and the validation messages)."""

    def register(fn: Handler) -> Handler:
        _handlers[name] = fn
        if on_invalid is not None:
            _validation_hooks[name] = on_invalid
        return fn

    return register


_json_encoder = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_json_encoder.encode(data), status=status, content_type="application/json", headers=headers
    )


def empty_response(status: int = 204) -> web.Response:
    return web.Response(status=status)


LAMBDA_MODEL: web.AppKey[ServiceModel] = web.AppKey("lambda_model", ServiceModel)


def load_service_model(service: str = "lambda") -> ServiceModel:
    return ServiceModel(Loader().load_service_model(service, "service-2"), service_name=service)


class _Route:
    """The operations sharing one method and path; some are told apart by a literal query parameter."""

    def __init__(self) -> None:
        self.by_query: list[tuple[dict[str, str], OperationModel]] = []

    def pick(self, request: web.Request) -> OperationModel:
        fallback = None
        for literal, op in self.by_query:
            if not literal:
                fallback = op
            elif all(request.query.get(k) == v for k, v in literal.items()):
                return op
        if fallback is None:
            raise UnknownOperationException(f"Unknown operation {request.method} {request.path}")
        return fallback


def _split_uri(uri: str) -> tuple[str, dict[str, str]]:
    path, _, query = uri.partition("?")
    literal = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        literal[key] = value
    return re.sub(r"\{(\w+)\+\}", r"{\1:.+}", path), literal


_HOT = frozenset({"Invoke"})


def add_routes(app: web.Application, model: ServiceModel) -> None:
    """Route every operation of the model to its registered handler (unknown ones get
    UnknownOperationException), plus a catch-all for paths the model does not have."""
    routes: dict[tuple[str, str], _Route] = {}
    for name in model.operation_names:
        op = model.operation_model(name)
        path, literal = _split_uri(op.http["requestUri"])
        route = routes.setdefault((op.http["method"], path), _Route())
        route.by_query.append((literal, op))
    # aiohttp tries a path's candidate routes in the order they were added (every Lambda path shares the
    # /2015-03-31 prefix), so the operations on the invoke path go first.
    hot = sorted(routes.items(), key=lambda item: not any(op.name in _HOT for _, op in item[1].by_query))
    for (method, path), route in hot:
        # More specific (literal query) operations first.
        route.by_query.sort(key=lambda item: -len(item[0]))
        app.router.add_route(method, path, _dispatcher(route))
    app.router.add_route("*", "/{tail:.*}", _unknown)


async def _unknown(request: web.Request) -> web.StreamResponse:
    raise UnknownOperationException(f"Unknown operation {request.method} {request.path}")


def _dispatcher(route: _Route) -> Handler:
    plans = {op.name: _InputPlan(op) for _, op in route.by_query}

    async def dispatch(request: web.Request) -> web.StreamResponse:
        op = route.pick(request)
        handler = _handlers.get(op.name)
        if handler is None:
            raise UnknownOperationException(f"Operation {op.name} is not supported by this server yet.")
        plan = plans[op.name]
        params = await parse_input(plan, request)
        check_input(op.name, plan, params)
        request["operation"] = op.name
        return await handler(request, params)

    return dispatch  # type: ignore[return-value]


def scalar_value(kind: str, raw: str) -> Any:
    """A number or boolean given as text (a path, query or header value) as the model's `kind` says; other
    kinds stay text. Raises ValueError for text that is not one."""
    if kind in ("integer", "long"):
        return int(raw)
    if kind in ("float", "double"):
        return float(raw)
    if kind == "boolean":
        if raw.lower() not in ("true", "false"):
            raise ValueError(raw)
        return raw.lower() == "true"
    return raw


def _scalar(shape: Shape, raw: str, where: str) -> Any:
    kind = shape.type_name
    try:
        return scalar_value(kind, raw)
    except ValueError:
        raise SerializationException(f"Could not convert '{raw}' at '{where}' to {kind}") from None


class _InputPlan:
    """Where each input member of one operation lives, worked out once from the model (botocore's shapes
    answer through properties, which are too slow to walk on every request)."""

    __slots__ = ("shape", "uri", "query", "headers", "body", "payload", "payload_blob")

    def __init__(self, op: OperationModel):
        shape = self.shape = op.input_shape
        self.uri: list[tuple[str, str, Shape]] = []
        self.query: list[tuple[str, str, Shape]] = []
        self.headers: list[tuple[str, str, Shape]] = []
        self.body: dict[str, Shape] = {}
        self.payload: str | None = None
        self.payload_blob = False
        if shape is None:
            return
        self.payload = shape.serialization.get("payload")
        if self.payload is not None:
            self.payload_blob = shape.members[self.payload].type_name == "blob"
        for member, mshape in shape.members.items():
            location = mshape.serialization.get("location")
            where = mshape.serialization.get("name", member)
            if location == "uri":
                self.uri.append((member, where, mshape))
            elif location == "querystring":
                self.query.append((member, where, mshape))
            elif location == "header":
                self.headers.append((member, where, mshape))
            elif member != self.payload:
                self.body[member] = mshape


def input_plan(model: ServiceModel, name: str) -> _InputPlan:
    return _InputPlan(model.operation_model(name))


def check_input(name: str, plan: _InputPlan, params: dict[str, Any]) -> None:
    """Validate an operation's input against the model; raises the error AWS answers with."""
    if plan.shape is not None:
        errors = validate(plan.shape, params)
        if errors:
            hook = _validation_hooks.get(name)
            if hook is None or not hook(params, errors):
                raise ValidationException(validation_message(errors))


async def parse_input(plan: _InputPlan, request: web.Request) -> dict[str, Any]:
    if plan.shape is None:
        return {}
    return collect_input(plan, request.match_info, request.headers, request.query if plan.query else None,
                         await request.read())


def collect_input(plan: _InputPlan, path: Mapping[str, str], headers: Mapping[str, str],
                  query: MultiMapping[str] | None, body: bytes) -> dict[str, Any]:
    """An operation's input members from where the plan says each lives: the path's (decoded) parameters,
    the headers (case-insensitive), the query string (needed only when the plan has query members) and the
    body."""
    params: dict[str, Any] = {}
    for members, source in ((plan.uri, path), (plan.headers, headers)):
        for member, where, mshape in members:
            raw = source.get(where)
            if raw is not None:
                params[member] = _scalar(mshape, raw, where)
    if plan.query:
        assert query is not None
        for member, where, mshape in plan.query:
            if mshape.type_name == "list":
                values = query.getall(where, [])
                if values:
                    params[member] = [_scalar(mshape.member, v, where) for v in values]
            elif where in query:
                params[member] = _scalar(mshape, query[where], where)

    if plan.payload is not None:
        if plan.payload_blob:
            params[plan.payload] = body
        elif body:
            params[plan.payload] = _decode_json(body)
        return params
    if plan.body and body:
        doc = _decode_json(body)
        if not isinstance(doc, dict):
            raise SerializationException("Start of list found where not expected")
        for member, mshape in plan.body.items():
            if member in doc:
                params[member] = _from_json(mshape, doc[member], member)
    return params


def _decode_json(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequestContentException(f"Could not parse request body into json: {exc}") from None


def _from_json(shape: Shape, value: Any, where: str) -> Any:
    """Blobs arrive base64-encoded in JSON bodies; everything else is used as decoded."""
    kind = shape.type_name
    if value is None:
        return None
    if kind == "blob":
        if not isinstance(value, str):
            raise SerializationException(f"Could not decode '{where}': expected a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SerializationException(f"Could not decode '{where}': invalid base64") from None
    if kind == "structure" and isinstance(value, dict):
        return {
            k: _from_json(shape.members[k], v, f"{where}.{k}") if k in shape.members else v
            for k, v in value.items()
        }
    if kind == "list" and isinstance(value, list):
        return [_from_json(shape.member, v, where) for v in value]
    return value


Reply = tuple[int, dict[str, str], bytes | None]
"""An answer as status, headers and body, for the paths that write HTTP themselves (the invoke front)."""


def error_reply(err: LambdaError, request_id: str) -> Reply:
    headers = {"x-amzn-ErrorType": err.code, "x-amzn-RequestId": request_id, "Content-Type": "application/json"}
    return err.status, headers, _json_encoder.encode(err.body())


def error_response(err: LambdaError, request_id: str) -> web.Response:
    status, headers, body = error_reply(err, request_id)
    return web.Response(body=body, status=status, headers=headers)
