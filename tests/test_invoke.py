"""Synchronous Invoke through boto3: results, context, environment, logs, and every failure Lambda reports."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

from conftest import create_function, unique, wait_for

ECHO = """
import json, os
COUNT = 0
def handler(event, context):
    global COUNT
    COUNT += 1
    print("event:", json.dumps(event))
    return {"event": event, "count": COUNT, "pid": os.getpid()}
"""

CONTEXT = """
import os
def handler(event, context):
    cc = context.client_context
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "identity": [context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id],
        "client_context": None if cc is None else {"custom": cc.custom, "env": cc.env,
                                                   "app_title": cc.client.app_title},
        "env": {k: v for k, v in os.environ.items()},
        "cwd": os.getcwd(),
    }
"""


def invoke(lam, name: str, payload: bytes | None = None, **kwargs):
    args = {"FunctionName": name, **kwargs}
    if payload is not None:
        args["Payload"] = payload
    resp = lam.invoke(**args)
    body = resp["Payload"].read()
    return resp, body


def log_of(resp) -> str:
    return base64.b64decode(resp["LogResult"]).decode()


def test_result_and_warm_reuse(lam):
    name, _ = create_function(lam, ECHO)
    resp, body = invoke(lam, name, b'{"a": [1, 2, {"b": null}]}')
    assert resp["StatusCode"] == 200
    assert resp["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in resp
    first = json.loads(body)
    assert first["event"] == {"a": [1, 2, {"b": None}]} and first["count"] == 1
    _, body = invoke(lam, name, b"[1,\n 2]")
    second = json.loads(body)
    assert second["count"] == 2, "module-level state survives between warm invocations"
    assert second["pid"] == first["pid"]
    assert second["event"] == [1, 2]


def test_scalar_payloads_and_none(lam):
    name, _ = create_function(lam, "def handler(event, context):\n    return None if event == 'none' else event\n")
    assert invoke(lam, name, b'"none"')[1] == b"null"
    assert invoke(lam, name, b"3.5")[1] == b"3.5"
    assert invoke(lam, name, b"{}")[1] == b"{}"
    # No payload at all: the function receives an empty object.
    assert invoke(lam, name)[1] == b"{}"


def test_context_and_environment(server, lam):
    name, _ = create_function(lam, CONTEXT, MemorySize=256, Environment={"Variables": {"GREETING": "hi"}})
    client_context = {"custom": {"k": "v"}, "env": {"os": "linux"}, "client": {"app_title": "demo"}}
    resp, body = invoke(lam, name, b"{}", ClientContext=base64.b64encode(json.dumps(client_context).encode()).decode())
    out = json.loads(body)
    assert out["function_name"] == name
    assert out["function_version"] == "$LATEST"
    assert out["invoked_function_arn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert out["memory_limit_in_mb"] == "256"
    assert out["aws_request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert out["log_group_name"] == f"/aws/lambda/{name}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", out["log_stream_name"])
    assert 2000 < out["remaining"] <= 3000
    assert out["identity"] == [None, None]
    assert out["client_context"] == {"custom": {"k": "v"}, "env": {"os": "linux"}, "app_title": "demo"}
    env = out["env"]
    assert env["GREETING"] == "hi"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == out["log_stream_name"]
    assert env["_HANDLER"] == "app.handler"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.11"
    assert env["TZ"] == ":UTC"
    assert env["LAMBDA_TASK_ROOT"] == out["cwd"]
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"] and env["AWS_SESSION_TOKEN"]
    assert env["AWS_ENDPOINT_URL"] == server.url
    assert os.path.isdir(env["TMPDIR"])
    # Without a client context, the function sees None.
    assert json.loads(invoke(lam, name, b"{}")[1])["client_context"] is None
    qualified = json.loads(invoke(lam, name, b"{}", Qualifier="$LATEST")[1])
    assert qualified["invoked_function_arn"].endswith(f"function:{name}:$LATEST")


def test_tmpdir_is_private_and_kept_warm(lam):
    code = """
import os
def handler(event, context):
    path = os.path.join(os.environ["TMPDIR"], "state")
    before = open(path).read() if os.path.exists(path) else ""
    with open(path, "a") as fh:
        fh.write("x")
    return before
"""
    name, _ = create_function(lam, code)
    assert invoke(lam, name)[1] == b'""'
    assert invoke(lam, name)[1] == b'"x"'
    other, _ = create_function(lam, code)
    assert invoke(lam, other)[1] == b'""'


def test_log_tail(lam):
    name, _ = create_function(lam, "print('init line')\ndef handler(event, context):\n    print('hello from', event['who'])\n    return 1\n")
    resp, _ = invoke(lam, name, b'{"who": "test"}', LogType="Tail")
    log = log_of(resp)
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert f"START RequestId: {request_id} Version: $LATEST\n" in log
    assert "hello from test\n" in log
    assert f"END RequestId: {request_id}\n" in log
    report = re.search(
        rf"REPORT RequestId: {request_id}\tDuration: ([\d.]+) ms\tBilled Duration: (\d+) ms\t"
        r"Memory Size: 128 MB\tMax Memory Used: (\d+) MB\tInit Duration: ([\d.]+) ms\t", log)
    assert report, log
    assert int(report.group(3)) > 0
    assert "init line" in log and "INIT_START Runtime Version: python:3.11" in log
    assert "\x1e" not in log, "no sentinel bytes leak into the output"
    assert log.index("hello from") < log.index("END RequestId")
    warm, _ = invoke(lam, name, b'{"who": "again"}', LogType="Tail")
    warm_log = log_of(warm)
    assert "Init Duration" not in warm_log and "init line" not in warm_log
    assert "hello from again" in warm_log
    assert "LogResult" not in invoke(lam, name, b'{"who": "x"}')[0]


def test_log_tail_is_last_4kb(lam):
    name, _ = create_function(lam, "def handler(event, context):\n    print('x' * 10000)\n    return 1\n")
    resp, _ = invoke(lam, name, LogType="Tail")
    raw = base64.b64decode(resp["LogResult"])
    assert len(raw) == 4096
    assert raw.decode().rstrip("\n").split("\n")[-1].startswith("REPORT RequestId")


def test_unhandled_exception(lam):
    code = "def helper():\n    raise ValueError('bad value')\ndef handler(event, context):\n    helper()\n"
    name, _ = create_function(lam, code)
    resp, body = invoke(lam, name, LogType="Tail")
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    assert resp["ExecutedVersion"] == "$LATEST"
    err = json.loads(body)
    assert list(err) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert err["errorMessage"] == "bad value" and err["errorType"] == "ValueError"
    assert err["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert len(err["stackTrace"]) == 2
    assert err["stackTrace"][0].startswith('  File "') and "in handler" in err["stackTrace"][0]
    assert "[ERROR] ValueError: bad value" in log_of(resp)
    # The instance survives a handled error.
    assert invoke(lam, name)[0]["FunctionError"] == "Unhandled"


def test_import_errors(lam):
    name, _ = create_function(lam, "x = 1\n", handler="missing_module.handler")
    resp, body = invoke(lam, name)
    err = json.loads(body)
    assert resp["FunctionError"] == "Unhandled"
    assert err["errorType"] == "Runtime.ImportModuleError"
    assert err["errorMessage"] == "Unable to import module 'missing_module': No module named 'missing_module'"
    assert err["requestId"] == "" and err["stackTrace"] == []

    name, _ = create_function(lam, "x = 1\n", handler="app.nothing")
    err = json.loads(invoke(lam, name)[1])
    assert err["errorType"] == "Runtime.HandlerNotFound"
    assert err["errorMessage"] == "Handler 'nothing' missing on module 'app'"

    name, _ = create_function(lam, "raise RuntimeError('init failed')\n")
    resp, body = invoke(lam, name, LogType="Tail")
    err = json.loads(body)
    assert err["errorType"] == "RuntimeError" and err["errorMessage"] == "init failed"
    assert "Init Duration" in log_of(resp)

    name, _ = create_function(lam, "def handler(:\n")
    assert json.loads(invoke(lam, name)[1])["errorType"] == "Runtime.UserCodeSyntaxError"


def test_nested_handler_paths(lam):
    files = {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/mod.py": "def fn(event, context):\n    return 'nested'\n",
    }
    name, _ = create_function(lam, files, handler="pkg/sub/mod.fn")
    assert invoke(lam, name)[1] == b'"nested"'
    name, _ = create_function(lam, files, handler="pkg.sub.mod.fn")
    assert invoke(lam, name)[1] == b'"nested"'


def test_marshal_error(lam):
    name, _ = create_function(lam, "def handler(event, context):\n    return {1, 2}\n")
    resp, body = invoke(lam, name)
    err = json.loads(body)
    assert resp["FunctionError"] == "Unhandled"
    assert err["errorType"] == "Runtime.MarshalError"
    assert err["errorMessage"].startswith("Unable to marshal response: Object of type set is not JSON serializable")


def test_exit_mid_invocation_replaces_instance(lam):
    code = "import os, sys\ndef handler(event, context):\n    if event.get('exit'):\n        sys.exit(0)\n    return os.getpid()\n"
    name, _ = create_function(lam, code)
    pid = json.loads(invoke(lam, name)[1])
    resp, body = invoke(lam, name, b'{"exit": true}')
    err = json.loads(body)
    assert resp["FunctionError"] == "Unhandled"
    assert err == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: Runtime exited without providing a reason",
    }
    new_pid = json.loads(invoke(lam, name)[1])
    assert new_pid != pid
    resp, body = invoke(lam, name, b'{"exit": false}')
    code = "import os, signal\ndef handler(event, context):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    name, _ = create_function(lam, code)
    resp, body = invoke(lam, name)
    assert json.loads(body)["errorMessage"].endswith("Runtime exited with error: signal: killed")


def test_timeout_kills_instance(lam):
    code = "import os, time\ndef handler(event, context):\n    if event.get('sleep'):\n        print('going to sleep')\n        time.sleep(30)\n    return os.getpid()\n"
    name, _ = create_function(lam, code, Timeout=1)
    pid = json.loads(invoke(lam, name)[1])
    resp, body = invoke(lam, name, b'{"sleep": true}', LogType="Tail")
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(body) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
    }
    log = log_of(resp)
    assert "going to sleep" in log and "Task timed out after 1.00 seconds" in log
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=5)
    assert json.loads(invoke(lam, name)[1]) != pid


def test_invalid_payloads(lam):
    name, _ = create_function(lam, ECHO)
    with pytest.raises(lam.exceptions.InvalidRequestContentException) as exc:
        lam.invoke(FunctionName=name, Payload=b"{not json")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert exc.value.response["Error"]["Message"].startswith(
        "Could not parse request body into json: Could not parse payload into json:")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, Payload=b"\x99")
    too_big = b'"' + b"a" * (6 * 1024 * 1024) + b'"'
    with pytest.raises(lam.exceptions.RequestTooLargeException) as exc:
        lam.invoke(FunctionName=name, Payload=too_big)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert exc.value.response["Error"]["Message"] == (
        "Request must be smaller than 6291456 bytes for the InvokeFunction operation")


def test_response_too_large(lam):
    name, _ = create_function(lam, "def handler(event, context):\n    return 'x' * (7 * 1024 * 1024)\n")
    resp, body = invoke(lam, name)
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(body) == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }


def test_response_past_the_frame_limit_replaces_the_instance(lam):
    """A reply frame longer than the server reads from a worker (twice the response limit): the instance is
    killed, the caller gets ResponseSizeTooLarge, and the next call gets a fresh instance."""
    name, _ = create_function(lam, (
        "import os\n"
        "def handler(event, context):\n"
        "    return 'x' * (13 * 1024 * 1024) if event.get('big') else os.getpid()\n"
    ))
    _, first = invoke(lam, name)
    resp, body = invoke(lam, name, json.dumps({"big": True}).encode())
    assert resp["FunctionError"] == "Unhandled"
    assert json.loads(body)["errorType"] == "Function.ResponseSizeTooLarge"
    resp, again = invoke(lam, name)
    assert "FunctionError" not in resp and again != first


def test_dry_run(lam):
    name, _ = create_function(lam, ECHO)
    resp = lam.invoke(FunctionName=name, InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    assert resp["Payload"].read() == b""
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=unique("missing"), InvocationType="DryRun")


def test_invoke_by_arn_forms(lam):
    name, _ = create_function(lam, "def handler(e, c):\n    return c.invoked_function_arn\n")
    arn = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert json.loads(invoke(lam, arn)[1]) == arn
    assert json.loads(invoke(lam, f"000000000000:function:{name}")[1]) == arn
    resp, body = invoke(lam, f"{name}:$LATEST")
    assert json.loads(body) == f"{arn}:$LATEST"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.invoke(FunctionName=name, Qualifier="$latest")
    assert exc.value.response["Error"]["Message"] == f"Function not found: {arn}:$latest"


def test_boto3_inside_function_talks_to_faas(lam):
    code = """
import boto3
def handler(event, context):
    client = boto3.client("lambda")
    return client.get_function(FunctionName=context.function_name)["Configuration"]["FunctionName"]
"""
    name, _ = create_function(lam, code, Timeout=30)
    resp, body = invoke(lam, name)
    assert "FunctionError" not in resp, body
    assert json.loads(body) == name


def test_parallel_invocations_use_separate_processes(lam):
    import concurrent.futures

    code = "import os, time\ndef handler(event, context):\n    time.sleep(0.5)\n    return os.getpid()\n"
    name, _ = create_function(lam, code)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        pids = list(pool.map(lambda _: json.loads(invoke(lam, name)[1]), range(4)))
    assert len(set(pids)) == 4


def test_json_log_format(lam):
    code = "import logging\nlog = logging.getLogger()\nlog.setLevel(logging.INFO)\n" \
           "def handler(event, context):\n    log.info('hello %s', 'json')\n    return 1\n"
    name, _ = create_function(lam, code, LoggingConfig={"LogFormat": "JSON"})
    resp, _ = invoke(lam, name, LogType="Tail")
    records = [json.loads(line) for line in log_of(resp).splitlines() if line.startswith("{")]
    by_type = {r.get("type"): r for r in records if "type" in r}
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert by_type["platform.start"]["record"] == {"requestId": request_id, "version": "$LATEST"}
    assert by_type["platform.runtimeDone"]["record"]["status"] == "success"
    report = by_type["platform.report"]["record"]
    assert report["requestId"] == request_id and report["metrics"]["memorySizeMB"] == 128
    assert "initDurationMs" in report["metrics"]
    app = next(r for r in records if r.get("message") == "hello json")
    assert app["level"] == "INFO" and app["requestId"] == request_id
    assert "START RequestId" not in log_of(resp)
    quiet, _ = create_function(lam, code, LoggingConfig={"LogFormat": "JSON", "SystemLogLevel": "WARN"})
    assert "platform.report" not in log_of(invoke(lam, quiet, LogType="Tail")[0])
