"""The functions the scenarios deploy, and creating them with boto3 (the way users do)."""

from __future__ import annotations

import io
import zipfile

import boto3
from botocore.config import Config

ROLE = "arn:aws:iam::000000000000:role/bench"
INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"

HELLO = "def handler(event, context):\n    return {'hello': 'world'}\n"
NOOP = "def handler(event, context):\n    return {'ok': True}\n"
PID = "import os\n\n\ndef handler(event, context):\n    return {'pid': os.getpid()}\n"
SLEEP = (
    "import os\nimport time\n\n\n"
    "def handler(event, context):\n    time.sleep(event.get('seconds', 1))\n    return {'pid': os.getpid()}\n"
)


def lambda_client(url: str):
    return boto3.client(
        "lambda", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120),
    )


def package(code: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("app.py", code)
    return buf.getvalue()


def create(lam, name: str, code: str, *, runtime: str, timeout: int = 30, memory: int = 128) -> str:
    """Create a function (handler app.handler) and return the path of its Invoke route."""
    lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": package(code)}, Timeout=timeout, MemorySize=memory)
    return INVOKE_PATH.format(name=name)


def payload(size: int) -> bytes:
    """A JSON object of exactly `size` bytes (at least 12)."""
    head = b'{"data":"'
    tail = b'"}'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail
