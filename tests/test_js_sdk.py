"""The AWS SDK for JavaScript v3 (@aws-sdk/client-lambda) under Node, against the real server.

tests/js/lambda_session.mjs runs one session on one LambdaClient (Node's http with keep-alive) and prints its
results as one JSON object. The SDK comes from $FAAS_JS_SDK_DIR/node_modules when that is set, else from
tests/js/node_modules (`npm install --prefix tests/js`, which .ci/run does when npm exists); without node or
the SDK the test skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import create_function, front_counts

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "lambda_session.mjs"

ECHO = """
def handler(event, context):
    print("echoing", context.aws_request_id)
    return {"echo": event}
"""

RAISES = """
def handler(event, context):
    raise ValueError("refused: " + event["why"])
"""


def sdk_dir() -> Path:
    """The directory whose node_modules holds the SDK (skips the test when there is none, or node is unfit)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    configured = os.environ.get("FAAS_JS_SDK_DIR")
    base = Path(configured).resolve() if configured else JS_DIR
    package = base / "node_modules" / "@aws-sdk" / "client-lambda" / "package.json"
    if not package.is_file():
        hint = "set by FAAS_JS_SDK_DIR" if configured else "run `npm install --prefix tests/js`"
        pytest.skip(f"@aws-sdk/client-lambda is not installed in {base / 'node_modules'} ({hint})")
    wanted = re.search(r">=\s*(\d+)", json.loads(package.read_text()).get("engines", {}).get("node", ""))
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    have = re.match(r"v(\d+)", version)
    if wanted and have and int(have.group(1)) < int(wanted.group(1)):
        pytest.skip(f"the installed @aws-sdk/client-lambda needs node >= {wanted.group(1)}; node is {version}")
    return base


def test_js_sdk_session(server, lam):
    base = sdk_dir()
    echo, _ = create_function(lam, ECHO)
    fails, _ = create_function(lam, RAISES)
    try:
        before = front_counts(server.url)
        env = {
            **os.environ,
            "FAAS_JS_SDK_DIR": str(base),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        run = subprocess.run(["node", SCRIPT.name, server.url, echo, fails],
                             capture_output=True, text=True, cwd=JS_DIR, env=env, timeout=90)
        after = front_counts(server.url)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)

        invoke = out["invoke"]
        assert json.loads(invoke.pop("payload")) == {"echo": {"hello": "js", "n": 1}}
        assert invoke == {
            "statusCode": 200, "httpStatusCode": 200, "executedVersion": "$LATEST", "functionError": None,
            "logResult": None,
        }

        tail = out["tail"]
        assert tail["statusCode"] == 200 and json.loads(tail["payload"]) == {"echo": {"hello": "tail"}}
        assert tail["logResultPresent"] and tail["logHasStart"] and tail["logHasEnd"] and tail["logHasReport"]
        assert tail["logHasRequestId"], tail
        assert f"echoing {tail['requestId']}" in tail["log"]

        assert out["event"] == {"statusCode": 202, "httpStatusCode": 202, "payload": ""}
        assert out["dryRun"] == {"statusCode": 204, "httpStatusCode": 204}

        failing = out["failing"]
        assert failing["statusCode"] == 200 and failing["functionError"] == "Unhandled"
        error = json.loads(failing["payload"])
        assert error["errorType"] == "ValueError" and error["errorMessage"] == "refused: because"

        missing = out["missing"]
        assert missing["thrown"] and missing["name"] == "ResourceNotFoundException", missing
        assert missing["httpStatusCode"] == 404 and missing["fault"] == "client"
        assert f"function:{echo}-missing" in missing["message"]

        assert out["sequential"] == {"count": 50, "succeeded": 50, "inOrder": True}

        assert out["getFunction"] == {
            "functionName": echo, "runtime": "python3.11", "handler": "app.handler", "codeLocationPresent": True,
        }
        listed = sum(len(page["Functions"]) for page in lam.get_paginator("list_functions").paginate())
        assert out["listFunctions"] == {"count": listed, "hasEcho": True, "hasFailing": True}
        assert out["afterOtherOperations"] == {"statusCode": 200, "payload": '{"echo":{"last":true}}'}

        # Keep-alive: the whole session was one connection. Its 56 Invokes up to GetFunction were the invoke
        # front's own; GetFunction handed the connection to aiohttp (one handover, the other is the second
        # /metrics scrape's own connection), which then answered ListFunctions and the last Invoke.
        assert out["connectionsBeforeOtherOperations"] == 1 and out["connections"] == 1
        assert (after[0] - before[0], after[1] - before[1]) == (56, 2)
    finally:
        lam.delete_function(FunctionName=echo)
        lam.delete_function(FunctionName=fails)

