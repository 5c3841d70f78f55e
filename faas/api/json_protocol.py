"""AWS's JSON protocol (`POST /` with `X-Amz-Target: <TargetPrefix>.<Operation>`), used by the built-in
services that share the Lambda port: Application Auto Scaling now; queues, streams and event buses later.

Each service registers its botocore model name and handlers with `@json_operation("service", "Operation")`;
requests are parsed and validated against the model just as the Lambda REST API is.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from botocore.model import ServiceModel, Shape

from faas.api.model import load_service_model
from faas.api.query_protocol import dispatch_query
from faas.api.validation import validate
from faas.errors import LambdaError, validation_message

JsonHandler = Callable[[web.Request, dict[str, Any]], Awaitable[Any]]
ValidationHook = Callable[[dict[str, Any], list[str]], list[str]]

_handlers: dict[tuple[str, str], JsonHandler] = {}
_validation_hooks: dict[tuple[str, str], ValidationHook] = {}
_encoder = msgspec.json.Encoder()


class JsonServiceError(LambdaError):
    """An error of a JSON-protocol service, named by the service's own error code."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.status = status


def json_operation(service: str, name: str, *,
                   on_invalid: ValidationHook | None = None) -> Callable[[JsonHandler], JsonHandler]:
    """Register a handler. When the input breaks the model's constraints, `on_invalid` (given the input and the
    validation messages) may raise the service's own error instead of ValidationException, or return the
    messages that still apply: fewer where the service accepts more than its model says."""

    def register(fn: JsonHandler) -> JsonHandler:
        _handlers[(service, name)] = fn
        if on_invalid is not None:
            _validation_hooks[(service, name)] = on_invalid
        return fn

    return register


class JsonServices:
    """Routes `X-Amz-Target` to (service model, handler)."""

    def __init__(self, services: list[str]):
        self.models: dict[str, tuple[str, ServiceModel]] = {}
        for service in services:
            model = load_service_model(service)
            self.models[model.metadata["targetPrefix"]] = (service, model)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/", self.dispatch)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        if "X-Amz-Target" not in request.headers:  # AWS's query protocol (SNS): Action=... in a form body
            return await dispatch_query(request)
        target = request.headers.get("X-Amz-Target", "")
        prefix, _, op_name = target.rpartition(".")
        found = self.models.get(prefix)
        content_type = request.headers.get("Content-Type", "application/x-amz-json-1.1")
        if found is None or op_name not in found[1].operation_names:
            return self._error(JsonServiceError("UnknownOperationException", f"Unknown operation {target}"),
                               content_type)
        service, model = found
        op = model.operation_model(op_name)
        handler = _handlers.get((service, op_name))
        try:
            if handler is None:
                raise JsonServiceError("UnknownOperationException",
                                       f"Operation {op_name} is not supported by this server yet.")
            body = await request.read()
            try:
                doc = msgspec.json.decode(body) if body else {}
            except msgspec.DecodeError:
                raise JsonServiceError("SerializationException", "Could not parse the request body as JSON") from None
            if not isinstance(doc, dict):
                raise JsonServiceError("SerializationException", "Start of list found where not expected")
            params = _from_json(op.input_shape, doc) if op.input_shape is not None else {}
            if op.input_shape is not None:
                errors = validate(op.input_shape, params)
                if errors:
                    hook = _validation_hooks.get((service, op_name))
                    if hook is not None:
                        errors = hook(params, errors)
                    if errors:
                        raise JsonServiceError("ValidationException", validation_message(errors))
            result = await handler(request, params)
        except LambdaError as err:
            return self._error(err, content_type)
        return web.Response(body=_encoder.encode(result if result is not None else {}), content_type=content_type
                            .split(";")[0], headers={"x-amzn-RequestId": request["request_id"]})

    @staticmethod
    def _error(err: LambdaError, content_type: str) -> web.Response:
        # Services that moved from the Query protocol (SQS) name the exception shape in `__type` and keep their
        # old error code in `x-amzn-query-error`; botocore reports that code and raises the shape's exception.
        wire_type = getattr(err, "wire_type", None) or err.code
        headers = {"x-amzn-ErrorType": wire_type}
        query_error = getattr(err, "query_error", None)
        if query_error:
            headers["x-amzn-query-error"] = query_error
        body = {"__type": wire_type, "message": err.message}
        return web.Response(body=_encoder.encode(body), status=err.status, content_type=content_type.split(";")[0],
                            headers=headers)


def _from_json(shape: Shape, value: Any) -> Any:
    """Blobs arrive base64-encoded; everything else is used as decoded (timestamps as epoch numbers)."""
    kind = shape.type_name
    if value is None:
        return None
    if kind == "blob" and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise JsonServiceError("SerializationException", "Invalid base64 in a blob member") from None
    if kind == "structure" and isinstance(value, dict):
        return {k: _from_json(shape.members[k], v) if k in shape.members else v for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_from_json(shape.member, v) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _from_json(shape.value, v) for k, v in value.items()}
    return value
