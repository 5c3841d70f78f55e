"""Function URLs on the wire: an HTTP request becomes an invocation with Lambda's payload format 2.0, and its
result an HTTP response, buffered or streamed, as Lambda's function URLs answer.

A request reaches a URL in one of two ways, both recognised by `url_request` (the API's one middleware asks it
first, so a function URL never meets the API's routing or error shapes):
* host-based: `Host: <url-id>.lambda-url.<region>.localhost:<port>` (curl resolves `*.localhost` itself; any
  host name whose second label is `lambda-url` works, so a wildcard DNS name does too);
* path-based, for clients that cannot set Host: `/_faas/url/<url-id>/<path>` on the server's own address;
  the function sees `/<path>` as rawPath.

Answers that are not the function's: an unknown URL id is 403 `{"Message":null}`, `AuthType=AWS_IAM` (request
signing is not checked yet) and a URL whose alias was deleted are 403 with AWS's "Forbidden" message, a function
error is 502 `Internal Server Error`, a throttle 429, a request whose event exceeds the synchronous payload
limit 413. With `Cors` configured, preflight requests are answered here and the configured headers replace the
function's own `Access-Control-*` headers; without it, OPTIONS requests go to the function.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from faas import ids
from faas.api.streaming import end_stream
from faas.errors import LambdaError, ResourceNotFoundException, TooManyRequestsException
from faas.invoke.router import InvokeRequest, InvokeResult
from faas.runtime.protocol import HTTP_INTEGRATION
from faas.services import SERVICES
from faas.store.registry import Registry
from faas.store.urls import UrlConfig

log = logging.getLogger(__name__)

URL_PATH_PREFIX = "/_faas/url/"
FORBIDDEN = (
    "Forbidden. For troubleshooting Function URL authorization issues, see: "
    "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"
)
INTERNAL_ERROR = b"Internal Server Error"
_TEXT_SUBTYPES = frozenset({"json", "xml", "javascript", "x-javascript", "ecmascript", "yaml", "x-yaml", "graphql"})
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DELIMITER = b"\0" * 8
_MAX_PRELUDE = 65536
_encoder = msgspec.json.Encoder()


class _BadResponse(Exception):
    """The function's result cannot be an HTTP response (Lambda answers 502)."""


def url_request(request: web.Request) -> tuple[str, str, str] | None:
    """(URL id, the path the function sees, the URL's domain) when the request is for a function URL."""
    host = request.host
    if ".lambda-url." in host:
        url_id, _, rest = host.partition(".")
        if rest.startswith("lambda-url."):
            return url_id, request.raw_path, host.rsplit(":", 1)[0]
    raw = request.raw_path
    if raw.startswith(URL_PATH_PREFIX):
        rest = raw[len(URL_PATH_PREFIX):]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        url_id, target = rest[:cut], rest[cut:]
        domain = f"{url_id}.lambda-url.{request.app[SERVICES].arns.region}.localhost"
        return url_id, target if target.startswith("/") else "/" + target, domain
    return None


def _message(status: int, message: str | None, error_type: str, request_id: str) -> web.Response:
    return web.Response(
        status=status, body=_encoder.encode({"Message": message}), content_type="application/json",
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": request_id},
    )


def _bad_gateway(request_id: str, extra: dict[str, str]) -> web.Response:
    return web.Response(status=502, body=INTERNAL_ERROR, content_type="application/json",
                        headers={**extra, "x-amzn-RequestId": request_id})


async def _latest_revision(registry: Registry, name: str) -> str | None:
    fv = await registry.get_version(name)
    return fv.revision_id if fv is not None else None


async def serve_url(request: web.Request, url_id: str, target: str, domain: str) -> web.StreamResponse:
    """Answer a function URL's request (`url_request` found it); never raises."""
    request_id = ids.request_id()
    try:
        return await _serve_url(request, url_id, target, domain, request_id)
    except Exception:
        log.exception("unhandled error serving function URL %s", url_id)
        return _message(500, "An internal error occurred.", "ServiceException", request_id)


async def _serve_url(request: web.Request, url_id: str, target: str, domain: str,
                     request_id: str) -> web.StreamResponse:
    svc = request.app[SERVICES]
    config = await svc.urls.lookup(url_id, functools.partial(_latest_revision, svc.registry))
    if config is None:
        return _message(403, None, "AccessDeniedException", request_id)
    cors = config.cors
    if cors is not None and request.method == "OPTIONS" and "Origin" in request.headers \
            and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=200, headers={**_preflight_headers(cors, request), "x-amzn-RequestId": request_id})
    if config.auth_type != "NONE":
        return _message(403, FORBIDDEN, "AccessDeniedException", request_id)
    limit = svc.config.limits.sync_payload_bytes
    too_large = f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
    if (request.content_length or 0) > limit:
        return _message(413, too_large, "RequestEntityTooLargeException", request_id)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _message(413, too_large, "RequestEntityTooLargeException", request_id)
    event = _encoder.encode(build_event(request, config, target, domain, body, request_id))
    if len(event) > limit:
        return _message(413, too_large, "RequestEntityTooLargeException", request_id)
    extra = _cors_headers(cors, request) if cors is not None else {}
    invoke = InvokeRequest(
        function_name=config.function_name, qualifier=config.qualifier, payload=event, request_id=request_id,
        trace_id=request.headers.get("X-Amzn-Trace-Id"),
    )
    stream = _HttpStream(request, request_id, extra, cors is not None) \
        if config.invoke_mode == "RESPONSE_STREAM" else None
    try:
        result = await svc.router.invoke(invoke, on_chunk=stream.write if stream else None)
    except TooManyRequestsException as err:
        return _message(429, err.message, err.code, request_id)
    except ResourceNotFoundException:
        return _message(403, FORBIDDEN, "AccessDeniedException", request_id)  # its alias is gone
    except LambdaError as err:
        return _message(err.status, err.message, err.code, request_id)
    if stream is not None:
        return await stream.finish(result)
    return _buffered(result, request_id, extra, cors is not None)


# -- the event ---------------------------------------------------------------------------------------


def _is_text(content_type: str) -> bool:
    mime = content_type.partition(";")[0].strip().lower()
    if mime.startswith("text/"):
        return True
    subtype = mime.rpartition("/")[2]
    return subtype in _TEXT_SUBTYPES or subtype.endswith(("+json", "+xml"))


def _clf_time(now: float) -> str:
    t = time.gmtime(now)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def build_event(request: web.Request, config: UrlConfig, target: str, domain: str, body: bytes,
                request_id: str) -> dict[str, Any]:
    """Lambda's payload format 2.0 for one request. `target` is the path and query string as sent."""
    raw_path, _, raw_query = target.partition("?")
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers.items():
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        elif key in headers:
            headers[key] += "," + value
        else:
            headers[key] = value
    peer = request.remote or ""
    headers.setdefault("x-forwarded-for", peer)
    headers.setdefault("x-forwarded-proto", request.scheme)
    port = request.host.rpartition(":")[2]
    if port.isdigit():
        headers.setdefault("x-forwarded-port", port)
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        query[key] = query[key] + "," + value if key in query else value
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path or "/",
        "rawQueryString": raw_query,
        "headers": headers,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": "anonymous",  # AuthType NONE: Lambda names no caller
        "apiId": config.url_id,
        "domainName": domain,
        "domainPrefix": config.url_id,
        "http": {
            "method": request.method,
            "path": raw_path or "/",
            "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
            "sourceIp": peer,
            "userAgent": request.headers.get("User-Agent", ""),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": _clf_time(now),
        "timeEpoch": int(now * 1000),
    }
    if body:
        text = None
        if _is_text(request.headers.get("Content-Type", "")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                pass
        event["body"] = text if text is not None else base64.b64encode(body).decode()
        event["isBase64Encoded"] = text is None
    else:
        event["isBase64Encoded"] = False
    return event


# -- responses ---------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _encoder.encode(value).decode()


def _head(doc: dict[str, Any]) -> tuple[int, CIMultiDict[str]]:
    """Status and headers of a structured response or a stream's prelude."""
    status = doc.get("statusCode", 200)
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise _BadResponse
    headers: CIMultiDict[str] = CIMultiDict()
    single, multi, cookies = doc.get("headers") or {}, doc.get("multiValueHeaders") or {}, doc.get("cookies") or []
    if not isinstance(single, dict) or not isinstance(multi, dict) or not isinstance(cookies, list):
        raise _BadResponse
    for name, value in single.items():
        if name.lower() not in _HOP_BY_HOP:
            headers.add(name, _text(value))
    for name, values in multi.items():
        if name.lower() not in _HOP_BY_HOP:
            for value in values if isinstance(values, list) else [values]:
                headers.add(name, _text(value))
    for cookie in cookies:
        headers.add("Set-Cookie", _text(cookie))
    return status, headers


def _http_response(payload: bytes) -> tuple[int, CIMultiDict[str], bytes]:
    """A buffered result as Lambda interprets it: a dict with statusCode is a response; any other JSON value
    is a 200 application/json body (a string as its text, anything else as its JSON)."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        raise _BadResponse from None
    if not isinstance(doc, dict) or "statusCode" not in doc:
        body = doc.encode() if isinstance(doc, str) else payload
        return 200, CIMultiDict({"Content-Type": "application/json"}), body
    status, headers = _head(doc)
    raw = doc.get("body")
    if raw is None:
        body = b""
    elif isinstance(raw, str) and doc.get("isBase64Encoded") is True:
        try:
            body = base64.b64decode(raw)
        except (binascii.Error, ValueError):
            raise _BadResponse from None
    else:
        body = _text(raw).encode()
    headers.setdefault("Content-Type", "application/json")
    return status, headers, body


def _split_prelude(data: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, rest = data.partition(_DELIMITER)
    try:
        prelude = msgspec.json.decode(head) if head.strip() else {}
    except msgspec.DecodeError:
        raise _BadResponse from None
    if not isinstance(prelude, dict):
        raise _BadResponse
    return prelude, rest


def _finish_headers(headers: CIMultiDict[str], request_id: str, extra: dict[str, str], cors: bool) -> None:
    if cors:  # the URL's CORS settings replace whatever the function said
        for name in [n for n in headers if n.lower().startswith("access-control-")]:
            del headers[name]
    headers.update(extra)
    headers["x-amzn-RequestId"] = request_id


def _buffered(result: InvokeResult, request_id: str, extra: dict[str, str], cors: bool) -> web.Response:
    if result.function_error:
        return _bad_gateway(request_id, extra)
    try:
        if result.content_type is None:
            status, headers, body = _http_response(result.payload)
        elif result.content_type == HTTP_INTEGRATION:  # a streaming handler behind a BUFFERED URL
            prelude, body = _split_prelude(result.payload)
            status, headers = _head(prelude)
            headers.setdefault("Content-Type", "application/octet-stream")
        else:
            status, headers, body = 200, CIMultiDict({"Content-Type": result.content_type}), result.payload
    except _BadResponse:
        return _bad_gateway(request_id, extra)
    _finish_headers(headers, request_id, extra, cors)
    return web.Response(status=status, headers=headers, body=body)


class _HttpStream:
    """A RESPONSE_STREAM URL's response: started at the function's first bytes (after the prelude, when it
    sends one), then written chunk by chunk with chunked transfer encoding."""

    def __init__(self, request: web.Request, request_id: str, extra: dict[str, str], cors: bool):
        self.request = request
        self.request_id = request_id
        self.extra = extra
        self.cors = cors
        self.response: web.StreamResponse | None = None
        self.pending = bytearray()  # a prelude not yet complete
        self.gone = False

    async def _start(self, status: int, headers: CIMultiDict[str]) -> web.StreamResponse:
        _finish_headers(headers, self.request_id, self.extra, self.cors)
        response = web.StreamResponse(status=status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(self.request)
        self.response = response
        return response

    async def _start_from(self, data: bytes, content_type: str | None) -> bytes:
        """Start the response from the stream's first bytes; returns the body bytes among them."""
        if content_type != HTTP_INTEGRATION:
            await self._start(200, CIMultiDict({"Content-Type": content_type or "application/octet-stream"}))
            return data
        try:
            prelude, data = _split_prelude(data)
            status, headers = _head(prelude)
        except _BadResponse:
            response = await self._start(502, CIMultiDict({"Content-Type": "application/json"}))
            await response.write(INTERNAL_ERROR)
            await response.write_eof()
            self.gone = True  # the rest of the stream has nowhere to go
            return b""
        headers.setdefault("Content-Type", "application/octet-stream")
        await self._start(status, headers)
        return data

    async def write(self, data: bytes, content_type: str | None, version: str) -> None:
        if self.gone:
            return
        try:
            if self.response is None:
                if content_type == HTTP_INTEGRATION:
                    self.pending += data
                    if _DELIMITER not in self.pending and len(self.pending) < _MAX_PRELUDE:
                        return
                    data, self.pending = bytes(self.pending), bytearray()
                data = await self._start_from(data, content_type)
            if data:
                await self.response.write(data)  # type: ignore[union-attr]
        except ConnectionError:
            self.gone = True

    async def finish(self, result: InvokeResult) -> web.StreamResponse:
        if self.response is None:
            if result.function_error:
                return _bad_gateway(self.request_id, self.extra)
            if not result.streamed:  # a handler that returned its response whole
                return _buffered(result, self.request_id, self.extra, self.cors)
            try:
                data = await self._start_from(bytes(self.pending), result.content_type)
                if data:
                    await self.response.write(data)  # type: ignore[union-attr]
            except ConnectionError:
                self.gone = True
        return await end_stream(self.response, self.gone)


def _allowed_origin(cors: dict[str, Any], origin: str) -> str | None:
    origins = cors.get("AllowOrigins") or []
    if "*" in origins:
        return origin if cors.get("AllowCredentials") else "*"
    return origin if any(o.lower() == origin.lower() for o in origins) else None


def _origin_headers(cors: dict[str, Any], allowed: str) -> dict[str, str]:
    """What every CORS answer to an allowed origin carries, preflight or not."""
    out = {"Access-Control-Allow-Origin": allowed}
    if allowed != "*":
        out["Vary"] = "Origin"
    if cors.get("AllowCredentials"):
        out["Access-Control-Allow-Credentials"] = "true"
    return out


def _cors_headers(cors: dict[str, Any], request: web.Request) -> dict[str, str]:
    """Headers for an actual (not preflight) response to a cross-origin request the URL allows."""
    origin = request.headers.get("Origin")
    allowed = _allowed_origin(cors, origin) if origin else None
    if allowed is None:
        return {}
    out = _origin_headers(cors, allowed)
    if cors.get("ExposeHeaders"):
        out["Access-Control-Expose-Headers"] = ",".join(cors["ExposeHeaders"])
    return out


def _preflight_headers(cors: dict[str, Any], request: web.Request) -> dict[str, str]:
    allowed = _allowed_origin(cors, request.headers["Origin"])
    if allowed is None:
        return {}  # the browser refuses the request
    out = _origin_headers(cors, allowed)
    if cors.get("AllowMethods"):
        out["Access-Control-Allow-Methods"] = ",".join(cors["AllowMethods"])
    if cors.get("AllowHeaders"):
        out["Access-Control-Allow-Headers"] = ",".join(cors["AllowHeaders"])
    if cors.get("MaxAge") is not None:
        out["Access-Control-Max-Age"] = str(cors["MaxAge"])
    return out

