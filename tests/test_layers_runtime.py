"""Layers as functions see them: /opt on the module paths, /opt/bin on PATH, later layers win."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import ROLE, Server, create_function, make_zip, unique


def publish(lam, files: dict[str, str], modes: dict[str, int] | None = None, **kwargs) -> str:
    resp = lam.publish_layer_version(LayerName=unique("layer"), Content={"ZipFile": make_zip(files, modes)}, **kwargs)
    return resp["LayerVersionArn"]


def run(lam, name: str, qualifier: str | None = None):
    resp = lam.invoke(FunctionName=name, **({"Qualifier": qualifier} if qualifier else {}))
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    return body


def test_python_imports_from_layers_and_order(lam):
    a = publish(lam, {"python/shared.py": "VALUE = 'a'\n", "python/only_a.py": "X = 1\n"})
    b = publish(lam, {"python/shared.py": "VALUE = 'b'\n",
                      "python/lib/python3.11/site-packages/sitepkg/__init__.py": "NAME = 'site'\n"})
    code = ("import shared, only_a, sitepkg\n"
            "def handler(e, c):\n    return [shared.VALUE, only_a.X, sitepkg.NAME]\n")
    name, created = create_function(lam, code, Layers=[a, b])
    assert [layer["Arn"] for layer in created["Layers"]] == [a, b]
    assert all(layer["CodeSize"] > 0 for layer in created["Layers"])
    assert run(lam, name) == ["b", 1, "site"]
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Layers=[b, a])
    assert run(lam, name) == ["a", 1, "site"], "the later layer overrides the earlier one"
    assert run(lam, name, "1") == ["b", 1, "site"], "a version keeps the layer list it was published with"
    # Deleting a layer version does not break functions that use it.
    lam.delete_layer_version(LayerName=a.split(":")[-2], VersionNumber=int(a.split(":")[-1]))
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": code + "# v2\n"}))
    assert run(lam, name) == ["a", 1, "site"]
    assert lam.get_function_configuration(FunctionName=name)["Layers"][1]["Arn"] == a


def test_binary_from_opt_bin(lam):
    tool = publish(lam, {"bin/hello-layer": "#!/bin/sh\necho hello from $0\n"}, {"bin/hello-layer": 0o755})
    code = "import subprocess\ndef handler(e, c):\n    return subprocess.run(['hello-layer'], capture_output=True, text=True).stdout\n"
    name, _ = create_function(lam, code, Layers=[tool])
    assert run(lam, name).startswith("hello from ") and run(lam, name).strip().endswith("/bin/hello-layer")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_requires_layer_package(lam):
    pkg = publish(lam, {"nodejs/node_modules/greeter/index.js": "exports.greet = (n) => `hi ${n}`;\n",
                        "nodejs/node_modules/greeter/package.json": '{"name": "greeter", "main": "index.js"}'})
    code = "const { greet } = require('greeter');\nexports.handler = async () => greet('layer');\n"
    name = unique("node")
    lam.create_function(FunctionName=name, Runtime="nodejs20.x", Role=ROLE, Handler="index.handler",
                        Code={"ZipFile": make_zip({"index.js": code})}, Layers=[pkg])
    assert run(lam, name) == "hi layer"


def test_missing_layer_is_rejected(lam):
    missing = "arn:aws:lambda:us-east-1:000000000000:layer:nothing-here:3"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        create_function(lam, "def handler(e, c):\n    return 1\n", Layers=[missing])
    assert exc.value.response["Error"]["Message"] == f"Layer version {missing} does not exist."


def test_unused_opt_merges_are_removed_at_start(tmp_path):
    """A merged /opt outlives the function versions that used it until the server restarts; then only the merges
    some version still uses are kept, and they still serve."""
    srv = Server(tmp_path / "data").start()
    try:
        lam = srv.client()
        a = publish(lam, {"python/shared.py": "VALUE = 'a'\n"})
        b = publish(lam, {"python/shared.py": "VALUE = 'b'\n"})
        code = "import shared\ndef handler(e, c):\n    return shared.VALUE\n"
        kept, _ = create_function(lam, code, Layers=[a])
        gone, _ = create_function(lam, code, Layers=[b])
        assert run(lam, kept) == "a" and run(lam, gone) == "b"
        opt = tmp_path / "data" / "opt"
        assert len([p for p in opt.iterdir() if p.name != "tmp"]) == 2
        lam.delete_function(FunctionName=gone)
    finally:
        srv.stop()
    srv = Server(tmp_path / "data").start()
    try:
        assert len([p for p in opt.iterdir() if p.name != "tmp"]) == 1
        assert run(srv.client(), kept) == "a"
    finally:
        srv.stop()
