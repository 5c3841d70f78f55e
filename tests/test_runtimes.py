"""One behavioural suite, run against every runtime: Python, Node.js, a shell custom runtime (curl, as in
AWS's tutorial) and AWS's own Python runtime interface client (awslambdaric) as a custom runtime."""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import sys

import pytest

from conftest import ROLE, make_zip, unique

PYTHON = """
import os, time
COUNT = 0
def handler(event, context):
    global COUNT
    COUNT += 1
    if event.get("op") == "fail":
        raise ValueError("boom")
    if event.get("op") == "sleep":
        time.sleep(event["seconds"])
    print(f"log-line-{COUNT}")
    return {"count": COUNT, "pid": os.getpid(), "request_id": context.aws_request_id,
            "arn": context.invoked_function_arn, "event": event}
"""

NODE = """
let count = 0;
export const handler = async (event, context) => {
  count += 1;
  if (event.op === 'fail') throw new Error('boom');
  if (event.op === 'sleep') await new Promise((resolve) => setTimeout(resolve, event.seconds * 1000));
  console.log(`log-line-${count}`);
  return { count, pid: process.pid, request_id: context.awsRequestId, arn: context.invokedFunctionArn, event };
};
"""

# In the style of AWS's custom runtime tutorial: curl against the Runtime API in a loop.
SHELL = r"""#!/bin/bash
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
COUNT=0
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -LD "$HEADERS" "$API/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  ARN=$(grep -Fi Lambda-Runtime-Invoked-Function-Arn "$HEADERS" | tr -d '[:space:]' | cut -d: -f2-)
  rm -f "$HEADERS"
  COUNT=$((COUNT + 1))
  OP=$(echo "$EVENT" | jq -r '.op // ""')
  if [ "$OP" = "fail" ]; then
    curl -sS -o /dev/null -X POST "$API/invocation/$REQUEST_ID/error" \
      -H "Lambda-Runtime-Function-Error-Type: Unhandled" -d '{"errorMessage":"boom","errorType":"ShellError"}'
    continue
  fi
  if [ "$OP" = "sleep" ]; then sleep "$(echo "$EVENT" | jq -r .seconds)"; fi
  echo "log-line-$COUNT"
  RESPONSE=$(jq -cn --argjson count "$COUNT" --argjson pid "$$" --arg rid "$REQUEST_ID" --arg arn "$ARN" \
    --argjson event "$EVENT" '{count: $count, pid: $pid, request_id: $rid, arn: $arn, event: $event}')
  curl -sS -o /dev/null -X POST "$API/invocation/$REQUEST_ID/response" -d "$RESPONSE"
done
"""


def _runtimes():
    yield pytest.param(dict(runtime="python3.11", handler="app.handler", files={"app.py": PYTHON}), id="python")
    yield pytest.param(
        dict(runtime="nodejs20.x", handler="index.handler", files={"index.mjs": NODE}), id="nodejs",
        marks=pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    )
    yield pytest.param(
        dict(runtime="provided.al2023", handler="function.handler", files={"bootstrap": SHELL}, exec={"bootstrap"}),
        id="shell-curl",
        marks=pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="curl and jq needed"),
    )
    ric = f"#!/bin/sh\nexec {sys.executable} -m awslambdaric \"$_HANDLER\"\n"
    yield pytest.param(
        dict(runtime="provided.al2023", handler="app.handler", files={"bootstrap": ric, "app.py": PYTHON},
             exec={"bootstrap"}),
        id="awslambdaric",
        marks=pytest.mark.skipif(importlib.util.find_spec("awslambdaric") is None, reason="awslambdaric missing"),
    )


@pytest.fixture(params=list(_runtimes()))
def function(request, lam):
    kind = request.param
    name = unique(request.node.callspec.id.split("-")[0])
    modes = {f: 0o755 for f in kind.get("exec", ())}
    lam.create_function(FunctionName=name, Runtime=kind["runtime"], Role=ROLE, Handler=kind["handler"],
                        Code={"ZipFile": make_zip(kind["files"], modes)}, Timeout=2)
    return name


def call(lam, name: str, event: dict, **kwargs):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), **kwargs)
    return resp, json.loads(resp["Payload"].read())


def test_result_context_and_warm_reuse(lam, function):
    resp, first = call(lam, function, {"op": "echo", "value": [1, "two"]})
    assert "FunctionError" not in resp, first
    assert resp["ExecutedVersion"] == "$LATEST"
    assert first["event"] == {"op": "echo", "value": [1, "two"]}
    assert first["request_id"] == resp["ResponseMetadata"]["RequestId"]
    assert first["arn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{function}"
    _, second = call(lam, function, {"op": "echo"})
    assert (second["count"], second["pid"]) == (first["count"] + 1, first["pid"])


def test_error_shape(lam, function):
    resp, err = call(lam, function, {"op": "fail"})
    assert resp["FunctionError"] == "Unhandled"
    assert resp["StatusCode"] == 200
    assert "boom" in err["errorMessage"] and err["errorType"]
    _, ok = call(lam, function, {"op": "echo"})
    assert ok["count"] >= 1, "the instance serves the next request after a function error"


def test_log_tail(lam, function):
    resp, body = call(lam, function, {"op": "echo"}, LogType="Tail")
    log = base64.b64decode(resp["LogResult"]).decode()
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert f"START RequestId: {request_id}" in log
    assert f"log-line-{body['count']}" in log
    assert f"END RequestId: {request_id}" in log
    assert f"REPORT RequestId: {request_id}\tDuration:" in log
    assert "Init Duration" in log


def test_timeout(lam, function):
    resp, err = call(lam, function, {"op": "sleep", "seconds": 10})
    assert resp["FunctionError"] == "Unhandled"
    assert err == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: Task timed out after 2.00 seconds",
    }
    resp, body = call(lam, function, {"op": "echo"})
    assert "FunctionError" not in resp and body["count"] == 1, "a fresh instance after the timeout"
