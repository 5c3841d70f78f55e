"""The bubblewrap sandbox: private /tmp, read-only /var/task, no view of the data dir, optional no network."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, ROLE, Server, create_function, make_zip, unique

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

PROBE = """
import json, os, socket
def handler(event, context):
    out = {"task_root": os.environ["LAMBDA_TASK_ROOT"], "cwd": os.getcwd(), "tmpdir": os.environ["TMPDIR"],
           "tmp_before": sorted(os.listdir("/tmp"))}
    with open("/tmp/mine", "w") as fh:
        fh.write(context.function_name)
    try:
        os.listdir(event["data_dir"])
        out["data_dir"] = "visible"
    except OSError as exc:
        out["data_dir"] = type(exc).__name__
    try:
        open("/var/task/new-file", "w").close()
        out["task_write"] = "allowed"
    except OSError as exc:
        out["task_write"] = type(exc).__name__
    try:
        socket.create_connection(("127.0.0.1", event["port"]), timeout=2).close()
        out["network"] = "reachable"
    except OSError as exc:
        out["network"] = type(exc).__name__
    try:
        chunk = b"x" * (1024 * 1024)
        with open("/tmp/big", "wb") as fh:
            for _ in range(600):  # 600 MB, in pieces: the function itself has only 128 MB of memory
                fh.write(chunk)
        out["tmp_limit"] = "none"
    except OSError as exc:
        out["tmp_limit"] = exc.errno
    finally:
        if os.path.exists("/tmp/big"):
            os.remove("/tmp/big")
    out["pid1"] = open("/proc/1/cmdline", "rb").read().split(b"\\0")[0].decode()
    return out
"""


def probe(srv: Server, name: str) -> dict:
    lam = srv.client()
    payload = json.dumps({"data_dir": str(srv.data_dir), "port": srv.port}).encode()
    resp = lam.invoke(FunctionName=name, Payload=payload)
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    return body


def test_sandboxed_function(tmp_path):
    srv = Server(tmp_path / "data", env={"FAAS_RUNTIME__SANDBOX": '"bwrap"'}).start()
    try:
        lam = srv.client()
        a, _ = create_function(lam, PROBE, Timeout=30)
        b, _ = create_function(lam, PROBE, Timeout=30)
        first = probe(srv, a)
        assert first["task_root"] == first["cwd"] == "/var/task"
        assert first["tmpdir"] == "/tmp" and first["tmp_before"] == []
        assert first["data_dir"] in ("FileNotFoundError", "PermissionError")
        assert first["task_write"] in ("OSError", "PermissionError")
        assert first["network"] == "reachable"
        assert first["tmp_limit"] == 28, "the private /tmp holds EphemeralStorage (512 MB), no more"
        assert first["pid1"] != "" and "faas" not in first["pid1"]
        assert probe(srv, a)["tmp_before"] == ["mine"], "a warm instance keeps its /tmp"
        assert probe(srv, b)["tmp_before"] == [], "another function has its own /tmp"
    finally:
        srv.stop()


def test_sandbox_without_network(tmp_path):
    srv = Server(tmp_path / "data", env={"FAAS_RUNTIME__SANDBOX": '"bwrap"', "FAAS_RUNTIME__NETWORK": "false"}).start()
    try:
        name, _ = create_function(srv.client(), PROBE, Timeout=30)
        assert probe(srv, name)["network"] in ("ConnectionRefusedError", "OSError", "TimeoutError")
    finally:
        srv.stop()


def test_unknown_sandbox_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "faas", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env={"FAAS_RUNTIME__SANDBOX": '"jail"', "PATH": "/usr/bin:/bin"}, cwd=REPO,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert 'unknown sandbox "jail"' in result.stderr


def test_sandbox_layers_and_node(tmp_path):
    srv = Server(tmp_path / "data", env={"FAAS_RUNTIME__SANDBOX": '"bwrap"'}).start()
    try:
        lam = srv.client()
        layer = lam.publish_layer_version(
            LayerName="tools", Content={"ZipFile": make_zip({"python/helper.py": "WHO = 'layer'\n"})}
        )["LayerVersionArn"]
        code = "import os, helper\ndef handler(e, c):\n    return [helper.WHO, helper.__file__, sorted(os.listdir('/opt'))]\n"
        name, _ = create_function(lam, code, Layers=[layer])
        body = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
        assert body == ["layer", "/opt/python/helper.py", ["python"]]
        if shutil.which("node"):
            node = unique("node")
            lam.create_function(
                FunctionName=node, Runtime="nodejs20.x", Role=ROLE, Handler="index.handler",
                Code={"ZipFile": make_zip({"index.js": "exports.handler = async () => process.cwd();\n"})},
            )
            assert json.loads(lam.invoke(FunctionName=node)["Payload"].read()) == "/var/task"
    finally:
        srv.stop()
