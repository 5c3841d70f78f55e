"""AWS's query protocol: `POST /` with a form body `Action=<Operation>&Version=<apiVersion>&...` and XML
answers, spoken by the built-in services whose botocore model says `"protocol": "query"` (SNS).

Handlers register with `@query_operation("sns", "Publish")`. Like JSON-protocol handlers they receive the input
parsed against the botocore model and validated, keyed by member names (blobs as bytes, timestamps as epoch
seconds), and return a dict shaped like the operation's output (or None), which is written as the model's XML.

The form flattens nested input into dotted keys: a structure member is `Prefix.Member`, a list element
`Prefix.member.N`, a map entry `Prefix.entry.N.key` / `Prefix.entry.N.value` (each of `member`, `key` and
`value` renamed by the shape's `locationName`, and dropped for `flattened` shapes), an empty list `Prefix=`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from botocore.model import OperationModel, ServiceModel, Shape

from faas import ids
from faas.api.model import load_service_model, scalar_value
from faas.api.validation import validate
from faas.errors import LambdaError, validation_message

log = logging.getLogger(__name__)

QueryHandler = Callable[[web.Request, dict[str, Any]], Awaitable[dict[str, Any] | None]]

_handlers: dict[tuple[str, str], QueryHandler] = {}
_models: dict[str, ServiceModel] = {}

_SCOPE = re.compile(r"Credential=[^/,\s]*/[^/]*/[^/]*/([^/]+)/")
_XML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#xD;"})


class QueryServiceError(LambdaError):
    """An error of a query-protocol service, named by the service's own error code (the model's
    `error.code`, e.g. SNS's `NotFound`). `sender` is False for the service's own faults."""

    def __init__(self, code: str, message: str, status: int = 400, *, sender: bool = True):
        super().__init__(message)
        self.code = code
        self.status = status
        self.sender = sender


def query_operation(service: str, name: str) -> Callable[[QueryHandler], QueryHandler]:
    def register(fn: QueryHandler) -> QueryHandler:
        _handlers[(service, name)] = fn
        return fn

    return register


def _service_models() -> dict[str, ServiceModel]:
    """The models of the services that registered handlers, loaded on first use."""
    for service, _ in list(_handlers):
        if service not in _models:
            _models[service] = load_service_model(service)
    return _models


def _pick(request: web.Request, action: str, version: str | None) -> tuple[str, ServiceModel] | None:
    found = [(name, m) for name, m in _service_models().items()
             if action in m.operation_names and (version is None or m.api_version == version)]
    if len(found) > 1:  # the same action in two services: the request's signing scope tells them apart
        scope = _SCOPE.search(request.headers.get("Authorization", ""))
        if scope:
            found = [(n, m) for n, m in found if scope.group(1) in (m.signing_name, m.endpoint_prefix)] or found
    return found[0] if found else None


async def dispatch_query(request: web.Request) -> web.StreamResponse:
    request_id = request.get("request_id") or ids.request_id()
    namespace = ""
    try:
        form = await _read_form(request)
        action = form.pop("Action", "")
        version = form.pop("Version", None)
        if not action:
            raise QueryServiceError("MissingAction", "Missing Action")
        picked = _pick(request, action, version)
        if picked is None:
            raise QueryServiceError("InvalidAction", f"The action {action} is not valid for this web service.")
        service, model = picked
        namespace = model.metadata.get("xmlNamespace", "")
        op = model.operation_model(action)
        handler = _handlers.get((service, action))
        if handler is None:
            raise QueryServiceError("InvalidAction", f"The action {action} is not supported by this server yet.")
        params: dict[str, Any] = {}
        if op.input_shape is not None:
            params = _parse(op.input_shape, _tree(form), "")
            errors = validate(op.input_shape, params)
            if errors:
                raise QueryServiceError("ValidationError", validation_message(errors))
        request["operation"] = action
        result = await handler(request, params)
    except LambdaError as err:
        return error_response(err, request_id, namespace)
    except web.HTTPException:  # e.g. a body over the size limit: the error middleware answers it
        raise
    except Exception:
        log.exception("unhandled error serving %s", request.get("operation") or "a query-protocol request")
        err = QueryServiceError("InternalError", "An internal error occurred.", 500, sender=False)
        return error_response(err, request_id, namespace)
    return web.Response(text=_result_xml(op, result or {}, request_id, namespace), content_type="text/xml",
                        headers={"x-amzn-RequestId": request_id})


def error_response(err: LambdaError, request_id: str, namespace: str = "") -> web.Response:
    sender = getattr(err, "sender", err.status < 500)
    xmlns = f' xmlns="{_escape(namespace)}"' if namespace else ""
    body = (
        f"<ErrorResponse{xmlns}><Error><Type>{'Sender' if sender else 'Receiver'}</Type>"
        f"<Code>{_escape(err.code)}</Code><Message>{_escape(err.message or '')}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return web.Response(text=body, status=err.status, content_type="text/xml",
                        headers={"x-amzn-RequestId": request_id})


# --------------------------------------------------------------------------------------------- input


async def _read_form(request: web.Request) -> dict[str, str]:
    """The query string and a form-encoded body together (a GET carries everything in the query string)."""
    form = dict(request.query)
    body = await request.read()
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise QueryServiceError("MalformedQueryString", "The request body is not valid UTF-8.") from None
        form.update(parse_qsl(text, keep_blank_values=True))
    return form


def _tree(form: dict[str, str]) -> dict[str, Any]:
    """Dotted keys as nested dicts: `A.entry.1.key=x` -> {"A": {"entry": {"1": {"key": "x"}}}}. A value
    at a key that also has children is kept under ""."""
    root: dict[str, Any] = {}
    for key, value in form.items():
        node = root
        *path, last = key.split(".")
        for part in path:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else {"": child}
            node = child
        if isinstance(node.get(last), dict):
            node[last][""] = value
        else:
            node[last] = value
    return root


def _wire_name(shape: Shape, default: str) -> str:
    return shape.serialization.get("name") or default


def _indexed(node: Any) -> list[Any]:
    """The children of a list or map node, in the order of their 1-based indexes."""
    if not isinstance(node, dict):
        return []
    return [node[k] for k in sorted((k for k in node if k.isdigit()), key=int)]


def _parse(shape: Shape, node: Any, path: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(node, dict):
            return {}
        out = {}
        for member, mshape in shape.members.items():
            wire = _wire_name(mshape, member)
            if wire in node:
                out[member] = _parse(mshape, node[wire], f"{path}.{member}" if path else member)
        return out
    if kind == "list":
        if not isinstance(node, dict):
            return []  # `Prefix=`: an empty list
        items = node if shape.serialization.get("flattened") else node.get(_wire_name(shape.member, "member"))
        return [_parse(shape.member, item, path) for item in _indexed(items)]
    if kind == "map":
        if not isinstance(node, dict):
            return {}
        entries = node if shape.serialization.get("flattened") else node.get("entry")
        key_name, value_name = _wire_name(shape.key, "key"), _wire_name(shape.value, "value")
        out = {}
        for entry in _indexed(entries):
            if isinstance(entry, dict) and isinstance(entry.get(key_name), str):
                value = entry.get(value_name)
                out[entry[key_name]] = None if value is None else _parse(shape.value, value, path)
        return out
    if isinstance(node, dict):
        node = node.get("", "")
    return _scalar(kind, node, path)


def _scalar(kind: str, raw: str, path: str) -> Any:
    try:
        if kind == "blob":
            return base64.b64decode(raw, validate=True)
        if kind == "timestamp":
            return float(raw) if re.fullmatch(r"-?\d+(\.\d+)?", raw) else \
                datetime.datetime.fromisoformat(raw).timestamp()
        return scalar_value(kind, raw)
    except (ValueError, binascii.Error):
        raise QueryServiceError("ValidationError", f"Value '{raw}' at '{path}' is not a valid {kind}") from None


# --------------------------------------------------------------------------------------------- output


def _escape(text: str) -> str:
    return text.translate(_XML_ESCAPES)


def _result_xml(op: OperationModel, result: dict[str, Any], request_id: str, namespace: str) -> str:
    out = [f'<{op.name}Response xmlns="{_escape(namespace)}">']
    shape = op.output_shape
    if shape is not None:
        wrapper = shape.serialization.get("resultWrapper")
        if wrapper:
            out.append(f"<{wrapper}>")
        _members(shape, result, out)
        if wrapper:
            out.append(f"</{wrapper}>")
    out.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{op.name}Response>")
    return "".join(out)


def _members(shape: Shape, value: dict[str, Any], out: list[str]) -> None:
    for member, mshape in shape.members.items():
        v = value.get(member)
        if v is not None:
            _element(mshape, v, _wire_name(mshape, member), out)


def _element(shape: Shape, value: Any, name: str, out: list[str]) -> None:
    kind = shape.type_name
    if kind == "list":
        if shape.serialization.get("flattened"):
            for item in value:
                _element(shape.member, item, name, out)
            return
        out.append(f"<{name}>")
        item_name = _wire_name(shape.member, "member")
        for item in value:
            _element(shape.member, item, item_name, out)
        out.append(f"</{name}>")
        return
    if kind == "map":
        flat = shape.serialization.get("flattened")
        key_name, value_name = _wire_name(shape.key, "key"), _wire_name(shape.value, "value")
        if not flat:
            out.append(f"<{name}>")
        for k, v in value.items():
            out.append(f"<{name}>" if flat else "<entry>")
            _element(shape.key, k, key_name, out)
            _element(shape.value, v, value_name, out)
            out.append(f"</{name}>" if flat else "</entry>")
        if not flat:
            out.append(f"</{name}>")
        return
    out.append(f"<{name}>")
    if kind == "structure":
        _members(shape, value, out)
    else:
        out.append(_escape(_text(kind, value)))
    out.append(f"</{name}>")


def _text(kind: str, value: Any) -> str:
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "blob":
        return base64.b64encode(value).decode()
    if kind == "timestamp":
        if isinstance(value, (int, float)):
            value = datetime.datetime.fromtimestamp(value, datetime.UTC)
        return value.isoformat().replace("+00:00", "Z")
    return str(value)
