"""The AWS CLI, as a user runs it, against the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROLE, make_zip, unique


def aws(server, *args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_MAX_ATTEMPTS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "awscli", "--endpoint-url", server.url, *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
    )


def test_cli_create_invoke_list(server, tmp_path):
    (tmp_path / "f.zip").write_bytes(make_zip({"app.py": "def handler(event, context):\n    return {'hello': event['name']}\n"}))
    name = unique("cli")
    created = aws(server, "lambda", "create-function", "--function-name", name, "--runtime", "python3.11",
                  "--role", ROLE, "--handler", "app.handler", "--zip-file", "fileb://f.zip", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["FunctionName"] == name
    invoked = aws(server, "lambda", "invoke", "--function-name", name,
                  "--payload", '{"name": "cli"}', "--log-type", "Tail", "out.json", cwd=tmp_path)
    assert invoked.returncode == 0, invoked.stderr
    meta = json.loads(invoked.stdout)
    assert meta["StatusCode"] == 200 and meta["ExecutedVersion"] == "$LATEST" and meta["LogResult"]
    assert json.loads((tmp_path / "out.json").read_text()) == {"hello": "cli"}
    listed = aws(server, "lambda", "list-functions")
    assert listed.returncode == 0, listed.stderr
    assert name in {f["FunctionName"] for f in json.loads(listed.stdout)["Functions"]}
    missing = aws(server, "lambda", "get-function", "--function-name", unique("missing"))
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr
