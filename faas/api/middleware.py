"""The server's one middleware: function URL requests go to their own handling, and for the API this is the
one place where exceptions become AWS-shaped error responses. (One layer, not two: aiohttp adds a layer of its
own whenever there are middlewares, and each costs every warm invoke a few microseconds.)"""

from __future__ import annotations

import logging

from aiohttp import web

from faas import ids
from faas.api.model import error_response
from faas.api.url_invoke import serve_url, url_request
from faas.errors import LambdaError, RequestEntityTooLargeException, ServiceException, UnknownOperationException

log = logging.getLogger(__name__)


@web.middleware
async def aws_errors(request: web.Request, handler) -> web.StreamResponse:
    url = url_request(request)
    if url is not None:
        return await serve_url(request, *url)
    request_id = ids.request_id()
    request["request_id"] = request_id
    try:
        response = await handler(request)
    except LambdaError as err:
        return error_response(err, request_id)
    except web.HTTPRequestEntityTooLarge:
        op = request.get("operation") or "CreateFunction"
        limit = request.app._client_max_size  # noqa: SLF001 - aiohttp exposes no public getter
        return error_response(
            RequestEntityTooLargeException(f"Request must be smaller than {limit} bytes for the {op} operation"),
            request_id,
        )
    except web.HTTPNotFound:
        return error_response(UnknownOperationException(f"Unknown operation {request.method} {request.path}"), request_id)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(ServiceException("An internal error occurred."), request_id)
    response.headers.setdefault("x-amzn-RequestId", request_id)
    return response
