"""RuntimeApiInstance: custom runtimes (provided.*) driven through AWS's Lambda Runtime API, without a server.

Three kinds of runtime talk to it here: a shell bootstrap written like the one in AWS's custom runtime
tutorial (curl against AWS_LAMBDA_RUNTIME_API), this test acting as the runtime itself (for the protocol's
corner cases), and AWS's Python runtime interface client, awslambdaric, when it is installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import msgspec
import pytest

from faas.runtime.instance import InitFailure, InstanceSpec
from faas.runtime.protocol import InvokeFrame
from faas.runtime.runtime_api import RuntimeApiInstance

API = "2018-06-01/runtime"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:custom"
CURL = shutil.which("curl")
BASH = shutil.which("bash")
needs_curl = pytest.mark.skipif(
    CURL is None or BASH is None, reason="the tutorial-style bootstrap needs curl and bash on PATH"
)
needs_ric = pytest.mark.skipif(
    importlib.util.find_spec("awslambdaric") is None,
    reason="awslambdaric (AWS's Python runtime interface client) is not installed: pip install awslambdaric",
)

# The bootstrap of AWS's custom runtime tutorial, plus the error report its text suggests: a handler that
# fails has its error POSTed to /error instead of its output to /response.
TUTORIAL_BOOTSTRAP = """\
#!/bin/bash
set -euo pipefail

# Initialization - load function handler
source $LAMBDA_TASK_ROOT/"$(echo $_HANDLER | cut -d. -f1).sh"

# Processing
while true
do
  HEADERS="$(mktemp)"
  # Get an event. The HTTP request will block until one is received
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")

  # Extract request ID by scraping response headers received above
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)

  # Run the handler function from the script
  if RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA"); then
    # Send the response
    curl -sS "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response" -d "$RESPONSE"
  else
    # Report the failure
    curl -sS -H "Lambda-Runtime-Function-Error-Type: Unhandled" \\
      "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/error" \\
      -d "{\\"errorMessage\\":\\"$RESPONSE\\",\\"errorType\\":\\"HandlerFailed\\",\\"stackTrace\\":[]}"
  fi
  rm -f "$HEADERS"
done
"""

FUNCTION_SH = """\
echo "loading function.sh"

function handler () {
  EVENT_DATA=$1
  echo "$EVENT_DATA" 1>&2;
  RESPONSE="Echoing request: '$EVENT_DATA'"

  echo $RESPONSE
}

function headers () {
  tr -d '\\r' < "$HEADERS"
}

function picky () {
  case "$1" in
    *fail*) echo "picky refuses $1" 1>&2; echo "refused"; return 1 ;;
  esac
  echo "accepted"
}

function chatty () {
  for i in $(seq 1 3000); do echo "line $i of $1" 1>&2; done
  echo "said a lot"
}

function slow () {
  echo "going to sleep" 1>&2
  sleep 30
  echo "woke up"
}
"""


def make_spec(code_dir: Path, work_dir: Path, *, timeout_s: int = 10, init_timeout_s: float = 10.0,
              command: tuple[str, ...] | None = None, handler: str = "function.handler") -> InstanceSpec:
    return InstanceSpec(
        function_name="custom", version="$LATEST", runtime="provided.al2023", handler=handler,
        code_dir=str(code_dir), memory_mb=128, timeout_s=timeout_s,
        command=command or (str(code_dir / "bootstrap"),), work_dir=str(work_dir), protocol="runtime-api",
        init_timeout_s=init_timeout_s, max_frame_bytes=6291556 * 2 + 1024,
    )


def make_frame(event: object = None, *, raw: bytes | None = None, client_context: object = None,
               identity: object = None, trace_id: str | None = None, deadline_s: float = 30.0) -> InvokeFrame:
    return InvokeFrame(
        id=str(uuid.uuid4()),
        deadline_ms=int((time.time() + deadline_s) * 1000),
        arn=ARN,
        event=msgspec.Raw(raw if raw is not None else json.dumps(event if event is not None else {}).encode()),
        trace_id=trace_id,
        client_context=msgspec.Raw(json.dumps(client_context).encode()),
        identity=msgspec.Raw(json.dumps(identity).encode()),
    )


def write_exec(path: Path, text: str, mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def base_env(code_dir: Path, handler: str = "function.handler") -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LAMBDA_TASK_ROOT": str(code_dir),
        "_HANDLER": handler,
        "AWS_LAMBDA_FUNCTION_NAME": "custom",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
    }


async def group_gone(pgid: int, timeout: float = 5.0) -> None:
    """SIGKILL is delivered asynchronously: wait (with a deadline) until no member of the group is alive."""
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        assert time.monotonic() < deadline, f"process group {pgid} still has {group_members(pgid)}"
        await asyncio.sleep(0.01)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@pytest.fixture
async def started():
    """Starts instances and stops every one of them after the test, whatever happened."""
    instances: list[RuntimeApiInstance] = []

    async def start(spec: InstanceSpec, env: dict[str, str]) -> RuntimeApiInstance:
        instance = RuntimeApiInstance(spec)
        instances.append(instance)
        await instance.start(env, "2024/01/01/[$LATEST]abc")
        return instance

    yield start
    for instance in instances:
        await instance.stop(grace_s=0.2)


@pytest.fixture
def tutorial(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    write_exec(code / "bootstrap", TUTORIAL_BOOTSTRAP)
    (code / "function.sh").write_text(FUNCTION_SH)
    return code


# -- the tutorial's shell bootstrap ----------------------------------------------------------------------


@needs_curl
async def test_tutorial_echo_warm_reuse_and_logs(tutorial: Path, tmp_path: Path, started):
    spec = make_spec(tutorial, tmp_path / "work")
    instance = await started(spec, base_env(tutorial))
    assert instance.alive and instance.init_ms > 0
    assert b"loading function.sh" in instance.init_output
    pid = instance.proc.pid

    first = make_frame({"key": "first"})
    outcome = await instance.invoke(first, 5.0)
    # Not JSON: Lambda hands a custom runtime's response back as it was posted.
    assert outcome.payload == b"""Echoing request: '{"key": "first"}'"""
    assert outcome.error_type is None and outcome.reusable and not outcome.timed_out
    assert b'{"key": "first"}' in outcome.output  # the handler's echo to stderr
    assert b"loading function.sh" not in outcome.output
    assert outcome.duration_ms > 0 and outcome.max_memory_mb > 0

    second = make_frame({"key": "second"})
    again = await instance.invoke(second, 5.0)
    assert again.payload == b"""Echoing request: '{"key": "second"}'"""
    assert b'{"key": "second"}' in again.output and b"first" not in again.output
    assert instance.proc.pid == pid and instance.alive and instance.invocations == 2


@needs_curl
async def test_tutorial_output_is_attributed_to_its_invocation(tutorial: Path, tmp_path: Path, started):
    instance = await started(make_spec(tutorial, tmp_path / "work", handler="function.chatty"),
                             base_env(tutorial, "function.chatty"))
    for n in range(3):
        outcome = await instance.invoke(make_frame({"round": n}), 10.0)
        assert outcome.payload == b"said a lot"
        # (curl's own `{"status":"OK"}` after a response has no newline, so a line may follow it directly.)
        lines = re.findall(r"line \d+ of .*", outcome.output.decode())
        assert lines == [f'line {i} of {{"round": {n}}}' for i in range(1, 3001)]


@needs_curl
async def test_tutorial_receives_invocation_headers(tutorial: Path, tmp_path: Path, started):
    env = base_env(tutorial, "function.headers")
    instance = await started(make_spec(tutorial, tmp_path / "work", handler="function.headers"), env)
    context = {"client": {"app_title": "demo"}, "custom": {"k": "v"}, "env": {"locale": "en"}}
    frame = make_frame({"a": 1}, client_context=context, identity={"cognitoIdentityId": "id-1"},
                       trace_id="Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1")
    outcome = await instance.invoke(frame, 5.0)
    assert outcome.error_type is None, outcome.payload
    lines = outcome.payload.decode().splitlines()
    assert lines[0].startswith("HTTP/1.1 200")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if ":" in line)}
    assert headers["lambda-runtime-aws-request-id"] == frame.id
    assert headers["lambda-runtime-deadline-ms"] == str(frame.deadline_ms)
    assert headers["lambda-runtime-invoked-function-arn"] == ARN
    assert headers["lambda-runtime-trace-id"] == frame.trace_id
    assert json.loads(headers["lambda-runtime-client-context"]) == context
    assert json.loads(headers["lambda-runtime-cognito-identity"]) == {"cognitoIdentityId": "id-1"}
    assert headers["content-type"].startswith("application/json")

    # Without a client context, identity or trace, those headers are left out.
    bare = await instance.invoke(make_frame({"a": 2}), 5.0)
    names = bare.payload.decode().lower()
    assert "lambda-runtime-client-context" not in names and "lambda-runtime-cognito-identity" not in names
    assert "lambda-runtime-trace-id" not in names and "lambda-runtime-deadline-ms" in names


@needs_curl
async def test_tutorial_error_post_keeps_the_instance(tutorial: Path, tmp_path: Path, started):
    instance = await started(make_spec(tutorial, tmp_path / "work", handler="function.picky"),
                             base_env(tutorial, "function.picky"))
    pid = instance.proc.pid
    failed = await instance.invoke(make_frame({"please": "fail"}), 5.0)
    assert failed.error_type == "HandlerFailed"
    assert json.loads(failed.payload) == {"errorMessage": "refused", "errorType": "HandlerFailed", "stackTrace": []}
    assert failed.reusable and not failed.timed_out
    assert b"picky refuses" in failed.output

    ok = await instance.invoke(make_frame({"please": "work"}), 5.0)
    assert ok.error_type is None and ok.payload == b"accepted"
    assert instance.proc.pid == pid and instance.alive


@needs_curl
async def test_tutorial_timeout_kills_the_process_group(tutorial: Path, tmp_path: Path, started):
    spec = make_spec(tutorial, tmp_path / "work", timeout_s=1, handler="function.slow")
    instance = await started(spec, base_env(tutorial, "function.slow"))
    pid = instance.proc.pid
    frame = make_frame({})
    began = time.monotonic()
    outcome = await instance.invoke(frame, 1.0)
    assert time.monotonic() - began < 5
    assert outcome.timed_out and not outcome.reusable
    assert outcome.error_type == "Sandbox.Timedout"
    assert json.loads(outcome.payload) == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {frame.id} Error: Task timed out after 1.00 seconds",
    }
    assert b"going to sleep" in outcome.output
    assert not instance.alive
    for _ in range(100):  # the `sleep 30` child goes with its shell
        if not group_members(pid):
            break
        await asyncio.sleep(0.02)
    await group_gone(pid)


@needs_curl
@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("exit 3", "Runtime exited with error: exit status 3"),
        ("exit 0", "Runtime exited without providing a reason"),
        ("kill -9 $$", "Runtime exited with error: signal: killed"),
    ],
)
async def test_exit_mid_invocation(tmp_path: Path, started, action: str, reason: str):
    code = tmp_path / "code"
    code.mkdir()
    write_exec(code / "bootstrap", f"""\
#!/bin/bash
set -euo pipefail
sleep 60 &  # a child left behind, holding the log pipe open
HEADERS="$(mktemp)"
EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${{AWS_LAMBDA_RUNTIME_API}}/2018-06-01/runtime/invocation/next")
echo "got $EVENT_DATA, giving up"
{action}
""")
    instance = await started(make_spec(code, tmp_path / "work"), base_env(code))
    pid = instance.proc.pid
    frame = make_frame({"n": 1})
    began = time.monotonic()
    outcome = await instance.invoke(frame, 5.0)
    assert time.monotonic() - began < 4  # well before the 5 s timeout: not held up by the orphan's pipe
    await group_gone(pid)
    assert outcome.error_type == "Runtime.ExitError" and not outcome.reusable and not outcome.timed_out
    assert json.loads(outcome.payload) == {
        "errorType": "Runtime.ExitError", "errorMessage": f"RequestId: {frame.id} Error: {reason}",
    }
    assert b'got {"n": 1}, giving up' in outcome.output
    assert not instance.alive


@needs_curl
async def test_init_error_post(tmp_path: Path, started):
    code = tmp_path / "code"
    code.mkdir()
    write_exec(code / "bootstrap", """\
#!/bin/bash
echo "cannot find my handler" 1>&2
curl -sS -H "Lambda-Runtime-Function-Error-Type: Runtime.NoSuchHandler" \\
  "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/init/error" \\
  -d '{"errorMessage":"handler nope not found","errorType":"Runtime.NoSuchHandler","stackTrace":[]}'
echo
sleep 30  # Lambda expects an exit here; a runtime that lingers is killed
""")
    with pytest.raises(InitFailure) as info:
        await started(make_spec(code, tmp_path / "work"), base_env(code))
    failure = info.value
    assert failure.error == {"errorMessage": "handler nope not found", "errorType": "Runtime.NoSuchHandler",
                             "stackTrace": []}
    assert b"cannot find my handler" in failure.output
    assert b'{"status":"OK"}' in failure.output  # what the Runtime API answered to curl
    assert 0 < failure.init_ms < 5000


@needs_curl
async def test_init_error_with_plain_text_body(tmp_path: Path, started):
    code = tmp_path / "code"
    code.mkdir()
    write_exec(code / "bootstrap", """\
#!/bin/bash
curl -sS -H "Lambda-Runtime-Function-Error-Type: Runtime.Broken" \\
  "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/init/error" -d 'it is all broken'
exit 1
""")
    with pytest.raises(InitFailure) as info:
        await started(make_spec(code, tmp_path / "work"), base_env(code))
    assert info.value.error == {"errorMessage": "it is all broken", "errorType": "Runtime.Broken"}


# -- start-up failures ----------------------------------------------------------------------------------


async def test_exit_before_ready(tmp_path: Path, started):
    code = tmp_path / "code"
    code.mkdir()
    write_exec(code / "bootstrap", "#!/bin/sh\necho 'boom' >&2\nexit 7\n")
    with pytest.raises(InitFailure) as info:
        await started(make_spec(code, tmp_path / "work"), base_env(code))
    assert info.value.error == {
        "errorType": "Runtime.ExitError",
        "errorMessage": "RequestId: {id} Error: Runtime exited with error: exit status 7",
    }
    assert info.value.output == b"boom\n"


async def test_missing_bootstrap(tmp_path: Path, started):
    code = tmp_path / "code"
    code.mkdir()
    with pytest.raises(InitFailure) as info:
        await started(make_spec(code, tmp_path / "work"), base_env(code))
    assert info.value.error == {
        "errorType": "Runtime.InvalidEntrypoint",
        "errorMessage": f"RequestId: {{id}} Error: Couldn't find valid bootstrap(s): [{code / 'bootstrap'}]",
    }


async def test_bootstrap_not_executable(tmp_path: Path, started):
    code = tmp_path / "code"
    code.mkdir()
    write_exec(code / "bootstrap", "#!/bin/sh\nexit 0\n", mode=0o644)
    with pytest.raises(InitFailure) as info:
        await started(make_spec(code, tmp_path / "work"), base_env(code))
    assert info.value.error == {
        "errorType": "Runtime.InvalidEntrypoint",
        "errorMessage": f"RequestId: {{id}} Error: fork/exec {code / 'bootstrap'}: permission denied",
    }


async def test_bootstrap_without_interpreter_line(tmp_path: Path, started):
    code = tmp_path / "code"
    code.mkdir()
    write_exec(code / "bootstrap", "echo this is not a program\n")
    with pytest.raises(InitFailure) as info:
        await started(make_spec(code, tmp_path / "work"), base_env(code))
    assert info.value.error["errorType"] == "Runtime.InvalidEntrypoint"
    assert info.value.error["errorMessage"].endswith(f"fork/exec {code / 'bootstrap'}: exec format error")


async def test_init_timeout(tmp_path: Path, started):
    code = tmp_path / "code"
    code.mkdir()
    write_exec(code / "bootstrap", "#!/bin/sh\necho 'warming up'\nexec sleep 30\n")
    began = time.monotonic()
    with pytest.raises(InitFailure) as info:
        await started(make_spec(code, tmp_path / "work", init_timeout_s=0.5), base_env(code))
    assert time.monotonic() - began < 5
    assert info.value.error["errorType"] == "Runtime.InitTimeout"
    assert info.value.output == b"warming up\n"


# -- the protocol, with this test as the runtime ---------------------------------------------------------


async def test_protocol_edges(tmp_path: Path, started):
    code = tmp_path / "code"
    code.mkdir()
    # A bootstrap that only tells the test where its Runtime API is; the test makes the calls.
    write_exec(code / "bootstrap",
               '#!/bin/sh\necho "$AWS_LAMBDA_RUNTIME_API" > address\necho "init says hi"\nexec sleep 60\n')
    spec = make_spec(code, tmp_path / "work")
    starting = asyncio.create_task(started(spec, base_env(code)))
    for _ in range(500):
        if (code / "address").exists() and (code / "address").read_text().strip():
            break
        await asyncio.sleep(0.01)
    base = f"http://{(code / 'address').read_text().strip()}/{API}"

    async with aiohttp.ClientSession() as http:
        async def get_next() -> tuple[int, dict[str, str], bytes]:
            async with http.get(f"{base}/invocation/next") as resp:
                return resp.status, dict(resp.headers), await resp.read()

        async def post(path: str, body: bytes | io.BytesIO, headers: dict[str, str] | None = None) -> tuple[int, dict]:
            async with http.post(f"{base}/{path}", data=body, headers=headers) as resp:
                return resp.status, await resp.json(content_type=None)

        # Unknown resources and methods.
        async with http.get(f"{base}/invocation/nope") as resp:
            assert resp.status == 404
        async with http.post(f"{base}/invocation/next") as resp:
            assert resp.status == 404
        assert await post("invocation/who/response", b"{}") == (
            400, {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"})

        # An invocation queued before the runtime asks for it; the first /next ends init.
        first = make_frame({"q": 1})
        invoking = asyncio.create_task(_invoke_later(starting, first))
        status, headers, body = await get_next()
        instance = await starting
        assert instance.init_ms > 0 and b"init says hi" in instance.init_output
        assert status == 200 and json.loads(body) == {"q": 1}
        assert headers["Lambda-Runtime-Aws-Request-Id"] == first.id
        assert headers["Lambda-Runtime-Deadline-Ms"] == str(first.deadline_ms)
        assert headers["Lambda-Runtime-Invoked-Function-Arn"] == ARN
        assert headers["Content-Type"].startswith("application/json")

        # /next while an invocation is unanswered, a report for another id, init/error after init.
        status, _, body = await get_next()
        assert status == 403 and json.loads(body)["errorType"] == "InvalidStateTransition"
        assert (await post("invocation/other-id/error", b"{}"))[0] == 400
        status, answer = await post("init/error", b"{}")
        assert status == 403 and answer["errorType"] == "InvalidStateTransition"

        # A response that is not JSON is kept as it is; a second one for the same id is refused.
        assert await post(f"invocation/{first.id}/response", b"plain, not json") == (202, {"status": "OK"})
        outcome = await invoking
        assert outcome.payload == b"plain, not json" and outcome.error_type is None and outcome.reusable
        status, answer = await post(f"invocation/{first.id}/response", b"again")
        assert status == 400 and answer["errorType"] == "InvalidStateTransition"

        # The runtime polls first this time; the error body is not JSON, so the header names the type.
        waiting = asyncio.create_task(get_next())
        await asyncio.sleep(0.05)
        second = make_frame({"q": 2})
        invoking = asyncio.create_task(instance.invoke(second, 5.0))
        status, headers, _ = await waiting
        assert status == 200 and headers["Lambda-Runtime-Aws-Request-Id"] == second.id
        # The first request's id is stale now.
        status, answer = await post(f"invocation/{first.id}/response", b"late")
        assert (status, answer["errorType"]) == (400, "InvalidRequestID")
        assert await post(f"invocation/{second.id}/error", b"it went wrong",
                          {"Lambda-Runtime-Function-Error-Type": "Custom.Failure"}) == (202, {"status": "OK"})
        outcome = await invoking
        assert outcome.error_type == "Custom.Failure" and outcome.reusable
        assert json.loads(outcome.payload) == {"errorMessage": "it went wrong", "errorType": "Custom.Failure"}

        # A JSON error body is the payload; its errorType wins over the header.
        third = make_frame({"q": 3})
        invoking = asyncio.create_task(instance.invoke(third, 5.0))
        await get_next()
        report = {"errorMessage": "bad", "errorType": "Body.Type", "stackTrace": ["at x"]}
        await post(f"invocation/{third.id}/error", json.dumps(report).encode(),
                   {"Lambda-Runtime-Function-Error-Type": "Header.Type"})
        outcome = await invoking
        assert outcome.error_type == "Body.Type" and json.loads(outcome.payload) == report

        # A response over Lambda's limit: 413 to the runtime, ResponseSizeTooLarge to the caller.
        fourth = make_frame({"q": 4})
        invoking = asyncio.create_task(instance.invoke(fourth, 10.0))
        await get_next()
        status, answer = await post(f"invocation/{fourth.id}/response", io.BytesIO(b"x" * (6291556 + 1)))
        assert status == 413 and answer["errorType"] == "RequestEntityTooLarge"
        outcome = await invoking
        assert outcome.error_type == "Function.ResponseSizeTooLarge" and not outcome.reusable
        assert json.loads(outcome.payload) == {
            "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
            "errorType": "Function.ResponseSizeTooLarge",
        }

        # stop() answers a pending /next rather than waiting for it.
        waiting = asyncio.create_task(get_next())
        await asyncio.sleep(0.05)
        began = time.monotonic()
        await instance.stop(grace_s=0.2)
        assert time.monotonic() - began < 3
        status, _, _ = await waiting
        assert status == 500
        assert not instance.alive
        await instance.stop()  # idempotent


async def _invoke_later(starting: asyncio.Task, frame: InvokeFrame):
    instance = await starting
    return await instance.invoke(frame, 5.0)


# -- AWS's Python runtime interface client ---------------------------------------------------------------

RIC_APP = """\
print("init: app module loaded")


def handler(event, context):
    print(f"handling {context.aws_request_id}")
    if "fail" in event:
        raise ValueError(f"bad input: {event['fail']}")
    custom = context.client_context.custom if context.client_context else None
    return {
        "echo": event,
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 30000,
        "custom": custom,
        "function_name": context.function_name,
        "log_stream": context.log_stream_name,
    }
"""


def ric_code(tmp_path: Path, handler: str = "app.handler") -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(RIC_APP)
    write_exec(code / "bootstrap", f"#!/bin/sh\nexec {sys.executable} -m awslambdaric {handler}\n")
    return code


@needs_ric
async def test_awslambdaric_result_error_and_reuse(tmp_path: Path, started):
    code = ric_code(tmp_path)
    instance = await started(make_spec(code, tmp_path / "work", handler="app.handler"),
                             base_env(code, "app.handler"))
    assert b"init: app module loaded" in instance.init_output
    pid = instance.proc.pid

    frame = make_frame({"hello": "world"}, client_context={"custom": {"tenant": "t1"}})
    outcome = await instance.invoke(frame, 10.0)
    assert outcome.error_type is None, outcome.payload
    assert json.loads(outcome.payload) == {
        "echo": {"hello": "world"}, "request_id": frame.id, "arn": ARN, "remaining_ok": True,
        "custom": {"tenant": "t1"}, "function_name": "custom", "log_stream": "2024/01/01/[$LATEST]abc",
    }
    assert f"handling {frame.id}".encode() in outcome.output
    assert outcome.max_memory_mb > 0 and outcome.reusable

    failing = make_frame({"fail": "nope"})
    error = await instance.invoke(failing, 10.0)
    assert error.error_type == "ValueError" and error.reusable
    body = json.loads(error.payload)
    assert body["errorMessage"] == "bad input: nope"
    assert body["errorType"] == "ValueError"
    assert body["requestId"] == failing.id
    assert isinstance(body["stackTrace"], list) and any("app.py" in line for line in body["stackTrace"])
    assert f"handling {failing.id}".encode() in error.output

    again = await instance.invoke(make_frame({"n": 3}), 10.0)
    assert json.loads(again.payload)["echo"] == {"n": 3}
    assert instance.proc.pid == pid and instance.invocations == 3


@needs_ric
async def test_awslambdaric_import_error_is_an_init_failure(tmp_path: Path, started):
    code = ric_code(tmp_path, "missing.handler")
    with pytest.raises(InitFailure) as info:
        await started(make_spec(code, tmp_path / "work", handler="missing.handler"),
                      base_env(code, "missing.handler"))
    error = info.value.error
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert error["errorMessage"].startswith("Unable to import module 'missing'")
