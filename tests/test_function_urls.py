"""Function URLs: the config API through boto3, and requests through aiohttp and curl against the real server."""

from __future__ import annotations

import asyncio
import io
import base64
import json
import shutil
import subprocess
from urllib.parse import urlsplit

import aiohttp
import pytest
from botocore.exceptions import ClientError
from multidict import CIMultiDict

from conftest import create_function, make_zip, unique

FORBIDDEN = (
    "Forbidden. For troubleshooting Function URL authorization issues, see: "
    "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"
)

# Echoes the event, or answers as the event's query string asks.
ECHO = r'''
import base64, json
def handler(event, context):
    q = event.get("queryStringParameters") or {}
    shape = q.get("shape")
    if shape == "full":
        return {"statusCode": 201, "headers": {"X-One": "1", "Content-Type": "text/plain", "X-Num": 7},
                "multiValueHeaders": {"X-Multi": ["a", "b"]}, "cookies": ["s=1; Path=/", "t=2"],
                "body": "created"}
    if shape == "binary":
        return {"statusCode": 200, "headers": {"content-type": "image/png"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if shape == "string":
        return "plain words"
    if shape == "number":
        return 42
    if shape == "nostatus":
        return {"message": "hi"}
    if shape == "bad":
        return {"statusCode": "teapot"}
    if shape == "cors":
        return {"statusCode": 200, "headers": {"Access-Control-Allow-Origin": "https://evil.example"}, "body": "x"}
    if shape == "error":
        raise ValueError("boom")
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
'''


def url_config(lam, name: str, **kwargs) -> str:
    return lam.create_function_url_config(FunctionName=name, AuthType=kwargs.pop("AuthType", "NONE"), **kwargs)[
        "FunctionUrl"]


def error_of(exc) -> tuple[int, str, str]:
    r = exc.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"]["Message"]


async def fetch(server, url: str, method: str = "GET", path: str = "/", *, via: str = "host", **kwargs):
    """(status, headers, body) of a request to a function URL: by Host header, or by the path-based form."""
    parts = urlsplit(url)
    headers = CIMultiDict(kwargs.pop("headers", {}))
    if via == "host":
        headers["Host"] = parts.netloc
        target = f"{server.url}{path}"
    else:
        target = f"{server.url}/_faas/url/{parts.hostname.split('.')[0]}{path}"
    async with aiohttp.ClientSession() as session:
        async with session.request(method, target, headers=headers, **kwargs) as resp:
            return resp.status, resp.headers, await resp.read()


def request(server, url, *args, **kwargs):
    return asyncio.run(fetch(server, url, *args, **kwargs))


# -- the config API ----------------------------------------------------------------------------------


def test_config_lifecycle(lam):
    name, _ = create_function(lam, ECHO)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert set(created) - {"ResponseMetadata"} == {"AuthType", "CreationTime", "FunctionArn", "FunctionUrl"}
    url = created["FunctionUrl"]
    host = urlsplit(url).hostname
    url_id, _, rest = host.partition(".")
    assert len(url_id) == 32 and url_id.isalnum() and url_id.islower()
    assert rest == "lambda-url.us-east-1.localhost" and url.endswith("/")
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"

    got = lam.get_function_url_config(FunctionName=name)
    assert got["InvokeMode"] == "BUFFERED" and got["FunctionUrl"] == url
    assert {"AuthType", "CreationTime", "FunctionArn", "FunctionUrl", "InvokeMode", "LastModifiedTime"} <= set(got)

    alias = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE",
                                           InvokeMode="RESPONSE_STREAM", Cors={"AllowOrigins": ["*"]})
    assert alias["InvokeMode"] == "RESPONSE_STREAM" and alias["Cors"] == {"AllowOrigins": ["*"]}
    assert alias["FunctionArn"].endswith(f":function:{name}:live") and alias["FunctionUrl"] != url

    updated = lam.update_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    assert updated["AuthType"] == "AWS_IAM" and "InvokeMode" not in updated and "LastModifiedTime" in updated
    assert updated["FunctionUrl"] == url and updated["CreationTime"] == created["CreationTime"]
    updated = lam.update_function_url_config(FunctionName=name, InvokeMode="BUFFERED")
    assert updated["InvokeMode"] == "BUFFERED"
    updated = lam.update_function_url_config(FunctionName=name, AuthType="NONE")
    assert updated["InvokeMode"] == "BUFFERED"  # set once, echoed by later updates

    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == [name, "live"]
    assert all("LastModifiedTime" in c and c["InvokeMode"] for c in listed)
    page = lam.list_function_url_configs(FunctionName=name, MaxItems=1)
    assert len(page["FunctionUrlConfigs"]) == 1
    rest_page = lam.list_function_url_configs(FunctionName=name, Marker=page["NextMarker"])
    assert [c["FunctionArn"] for c in rest_page["FunctionUrlConfigs"]] == [alias["FunctionArn"]]

    deleted = lam.delete_function_url_config(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert [c["FunctionArn"] for c in lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]] == [
        alias["FunctionArn"]]
    with pytest.raises(ClientError) as exc:
        lam.get_function_url_config(FunctionName=name)
    assert error_of(exc) == (404, "ResourceNotFoundException", "The resource you requested does not exist.")
    lam.delete_function(FunctionName=name)
    create_function(lam, ECHO, name=name)
    assert lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"] == []


def test_config_errors(lam):
    name, resp = create_function(lam, ECHO)
    arn = resp["FunctionArn"]
    url_config(lam, name)
    with pytest.raises(ClientError) as exc:
        url_config(lam, name)
    assert error_of(exc) == (409, "ResourceConflictException", (
        f"Failed to create function url config for [functionArn = {arn}]. Error message:  "
        "FunctionUrlConfig exists for this Lambda function"))
    for call in (lambda: url_config(lam, unique("missing")), lambda: url_config(lam, name, Qualifier="nope"),
                 lambda: lam.update_function_url_config(FunctionName=name, Qualifier="nope", AuthType="NONE"),
                 lambda: lam.list_function_url_configs(FunctionName=unique("missing"))):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc) == (404, "ResourceNotFoundException", "Function does not exist")
    for call in (lambda: lam.get_function_url_config(FunctionName=unique("missing")),
                 lambda: lam.get_function_url_config(FunctionName=name, Qualifier="nope"),
                 lambda: lam.delete_function_url_config(FunctionName=name, Qualifier="nope")):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_of(exc) == (404, "ResourceNotFoundException", "The resource you requested does not exist.")
    for qualifier in ("1", "$LATEST"):
        for call in (lambda q=qualifier: url_config(lam, name, Qualifier=q),
                     lambda q=qualifier: lam.get_function_url_config(FunctionName=unique("missing"), Qualifier=q),
                     lambda q=qualifier: lam.delete_function_url_config(FunctionName=name, Qualifier=q)):
            with pytest.raises(ClientError) as exc:
                call()
            assert error_of(exc) == (400, "ValidationException", (
                f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy constraint: "
                r"Member must satisfy regular expression pattern: ((?!^\d+$)^[0-9a-zA-Z-_]+$)"))
    with pytest.raises(ClientError) as exc:
        url_config(lam, unique("f"), InvokeMode="UNKNOWN")
    assert error_of(exc) == (400, "ValidationException", (
        "1 validation error detected: Value 'UNKNOWN' at 'invokeMode' failed to satisfy constraint: "
        "Member must satisfy enum value set: [RESPONSE_STREAM, BUFFERED]"))
    with pytest.raises(ClientError) as exc:
        lam.get_function_url_config(FunctionName=f"{arn}:live", Qualifier="other")
    assert error_of(exc) == (400, "InvalidParameterValueException",
                             "The derived qualifier from the function name does not match the specified qualifier.")


# -- requests and responses --------------------------------------------------------------------------


def test_event_format(server, lam):
    name, _ = create_function(lam, ECHO)
    url = url_config(lam, name)
    status, headers, body = request(
        server, url, "POST", "/a/b%20c?x=1&x=2&y=&z=%C3%A9",
        headers={"Cookie": "c1=v1; c2=v2", "X-Dup": "1", "User-Agent": "tester", "Content-Type": "text/plain"},
        data="hello text",
    )
    assert status == 200 and headers["Content-Type"] == "application/json" and "x-amzn-RequestId" in headers
    event = json.loads(body)
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/a/b%20c" and event["rawQueryString"] == "x=1&x=2&y=&z=%C3%A9"
    assert event["queryStringParameters"] == {"x": "1,2", "y": "", "z": "é"}
    assert event["cookies"] == ["c1=v1", "c2=v2"] and "cookie" not in event["headers"]
    assert event["headers"]["x-dup"] == "1" and event["headers"]["user-agent"] == "tester"
    assert all(k == k.lower() for k in event["headers"])
    assert event["body"] == "hello text" and event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    url_id = urlsplit(url).hostname.split(".")[0]
    assert ctx["http"] == {"method": "POST", "path": "/a/b%20c", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                           "userAgent": "tester"}
    assert ctx["apiId"] == ctx["domainPrefix"] == url_id
    assert ctx["domainName"] == urlsplit(url).hostname and ctx["stage"] == "$default"
    assert ctx["requestId"] == headers["x-amzn-RequestId"] and isinstance(ctx["timeEpoch"], int)
    assert ctx["time"].endswith(" +0000") and ctx["routeKey"] == "$default"

    # Repeated headers are comma-joined; binary bodies arrive base64-encoded; GET has no body.
    status, _, body = request(server, url, "PUT", "/bin", data=bytes(range(256)),
                              headers={"Content-Type": "application/octet-stream"})
    event = json.loads(body)
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == bytes(range(256))
    status, _, body = request(server, url, "GET", "/", via="path", headers=[("X-Dup", "1"), ("X-Dup", "2")])
    event = json.loads(body)
    assert event["headers"]["x-dup"] == "1,2" and "body" not in event and event["rawQueryString"] == ""
    assert event["rawPath"] == "/" and "queryStringParameters" not in event and "cookies" not in event
    status, _, body = request(server, url, "GET", "/deep/path?q=1", via="path")
    assert json.loads(body)["rawPath"] == "/deep/path" and json.loads(body)["rawQueryString"] == "q=1"


def test_response_shapes(server, lam):
    name, _ = create_function(lam, ECHO)
    url = url_config(lam, name)

    async def all_shapes():
        return {shape: await fetch(server, url, "GET", f"/?shape={shape}")
                for shape in ("full", "binary", "string", "number", "nostatus", "bad", "error")}

    got = asyncio.run(all_shapes())
    status, headers, body = got["full"]
    assert (status, body, headers["Content-Type"]) == (201, b"created", "text/plain")
    assert headers["X-One"] == "1" and headers["X-Num"] == "7" and headers.getall("X-Multi") == ["a", "b"]
    assert headers.getall("Set-Cookie") == ["s=1; Path=/", "t=2"]
    status, headers, body = got["binary"]
    assert (status, body, headers["Content-Type"]) == (200, bytes(range(256)), "image/png")
    assert got["string"][::2] == (200, b"plain words") and got["string"][1]["Content-Type"] == "application/json"
    assert got["number"][::2] == (200, b"42")
    assert got["nostatus"][::2] == (200, b'{"message":"hi"}')
    assert got["bad"][::2] == (502, b"Internal Server Error")
    assert got["error"][::2] == (502, b"Internal Server Error")


def test_cors(server, lam):
    name, _ = create_function(lam, ECHO)
    cors = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["x-custom"], "ExposeHeaders": ["x-one"], "MaxAge": 300, "AllowCredentials": True}
    url = url_config(lam, name, Cors=cors)
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    status, headers, body = request(server, url, "OPTIONS", "/", headers=preflight)
    assert status == 200 and body == b""
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Allow-Methods"] == "GET,POST"
    assert headers["Access-Control-Allow-Headers"] == "x-custom"
    assert headers["Access-Control-Max-Age"] == "300" and headers["Access-Control-Allow-Credentials"] == "true"
    status, headers, _ = request(server, url, "OPTIONS", "/", headers={**preflight, "Origin": "https://other"})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    # Actual responses carry the URL's headers, replacing the function's own.
    status, headers, _ = request(server, url, "GET", "/?shape=cors", headers={"Origin": "https://app.example"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Expose-Headers"] == "x-one" and headers["Vary"] == "Origin"
    status, headers, _ = request(server, url, "GET", "/?shape=cors", headers={"Origin": "https://other"})
    assert "Access-Control-Allow-Origin" not in headers
    # Without Cors, OPTIONS reaches the function.
    plain = url_config(lam, create_function(lam, ECHO)[0])
    status, _, body = request(server, plain, "OPTIONS", "/", headers=preflight)
    assert status == 200 and json.loads(body)["requestContext"]["http"]["method"] == "OPTIONS"
    lam.update_function_url_config(FunctionName=name, Cors={"AllowOrigins": ["*"], "AllowMethods": ["*"]})
    status, headers, _ = request(server, url, "OPTIONS", "/", headers=preflight)
    assert headers["Access-Control-Allow-Origin"] == "*" and headers["Access-Control-Allow-Methods"] == "*"


def test_alias_urls(server, lam):
    name, _ = create_function(lam, "def handler(e, c):\n    return {'v': c.function_version}\n")
    v1 = lam.publish_version(FunctionName=name)["Version"]
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": "def handler(e, c):\n    return {'v': 'new'}\n"}))
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=v1)
    base = url_config(lam, name)
    live = url_config(lam, name, Qualifier="live")
    assert request(server, base)[::2] == (200, b'{"v":"new"}')
    assert request(server, live)[::2] == (200, b'{"v":"1"}')
    lam.delete_alias(FunctionName=name, Name="live")
    status, headers, body = request(server, live)
    assert (status, json.loads(body)) == (403, {"Message": FORBIDDEN})
    assert headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert request(server, base)[0] == 200
    # Deleting the function deletes its URLs; one created again under the same name gets a new id.
    lam.delete_function(FunctionName=name)
    assert request(server, base)[::2] == (403, b'{"Message":null}')
    create_function(lam, ECHO, name=name)
    assert request(server, base)[0] == 403
    assert url_config(lam, name) != base


def test_url_errors(server, lam):
    name, _ = create_function(lam, ECHO)
    url = url_config(lam, name)
    missing = url.replace(urlsplit(url).hostname.split(".")[0], "0" * 32)
    status, headers, body = request(server, missing)
    assert (status, body) == (403, b'{"Message":null}')
    assert headers["x-amzn-ErrorType"] == "AccessDeniedException" and headers["Content-Type"] == "application/json"
    assert request(server, missing, via="path")[0] == 403

    lam.update_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    status, headers, body = request(server, url)
    assert (status, json.loads(body)) == (403, {"Message": FORBIDDEN})
    lam.update_function_url_config(FunctionName=name, AuthType="NONE")

    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    status, headers, body = request(server, url)
    assert (status, json.loads(body)) == (429, {"Message": "Rate Exceeded."})
    assert headers["x-amzn-ErrorType"] == "TooManyRequestsException"
    lam.delete_function_concurrency(FunctionName=name)

    status, headers, body = request(server, url, "POST", "/", data=io.BytesIO(b"x" * 6291457))
    assert status == 413 and headers["x-amzn-ErrorType"] == "RequestEntityTooLargeException"
    big = name + "-big"
    create_function(lam, "def handler(e, c):\n    return 'x' * 7000000\n", name=big, MemorySize=512)
    assert request(server, url_config(lam, big))[::2] == (502, b"Internal Server Error")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(server, lam):
    name, _ = create_function(lam, ECHO)
    url = url_config(lam, name)
    # curl resolves *.localhost to the loopback address itself, so the FunctionUrl works as printed.
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "30", "-b", "k=v", "-H", "X-Test: yes", "-d", '{"a":1}',
         "-H", "Content-Type: application/json", f"{url}path?shape=full"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert out.startswith("HTTP/1.1 201") and out.endswith("created")
    assert "Set-Cookie: s=1; Path=/" in out
    url_id = urlsplit(url).hostname.split(".")[0]
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "-b", "k=v", "-H", "X-Test: yes", "-d", '{"a":1}',
         "-H", "Content-Type: application/json", f"{server.url}/_faas/url/{url_id}/p?x=1"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    event = json.loads(out)
    assert event["cookies"] == ["k=v"] and event["headers"]["x-test"] == "yes" and event["body"] == '{"a":1}'
    assert event["rawPath"] == "/p" and event["queryStringParameters"] == {"x": "1"}

