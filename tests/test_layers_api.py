"""Layers through boto3 against the real server, plus the /opt merge and the function-side `Layers` checks."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import stat
import types
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import ROLE, make_zip, unique
from faas.api.layers import check_layers_errors, resolve_function_layers, rewrite_layers_errors
from faas.arn import Arns
from faas.errors import InvalidParameterValueException, ValidationException
from faas.store.code import CodeStore
from faas.store.db import Database
from faas.store.layers import Layers, assemble_opt

REGION, ACCOUNT = "us-east-1", "000000000000"
PREFIX = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:"
CREATED_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000")
NOT_FOUND = "The resource you requested does not exist."
LAYER_ARN_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:layer:"
    r"[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)"
)
SUPPORTED = (
    "nodejs20.x, python3.14, provided.al2023, python3.12, python3.13, nodejs24.x, nodejs22.x, java25, python3.10, "
    "python3.11, java21, ruby3.3, ruby3.4, ruby3.2, python3.8, python3.9, java17, nodejs16.x, dotnet10, dotnet8, "
    "java11, dotnet6, nodejs18.x, provided.al2, java8.al2"
)
REVISION_MISMATCH = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetLayerPolicy API to retrieve the latest Revision Id"
)


def error(exc) -> tuple[str, str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def body(resp: dict) -> dict:
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def layer_zip(tag: str) -> bytes:
    return make_zip({"python/mod.py": f"TAG = {tag!r}\n"})


def publish(lam, name: str, tag: str = "x", **kwargs) -> dict:
    return lam.publish_layer_version(LayerName=name, Content={"ZipFile": layer_zip(tag)}, **kwargs)


# -- publish / get --------------------------------------------------------------------------------------------


def test_publish_defaults_and_keys(lam):
    name = unique("layer")
    data = layer_zip("one")
    resp = lam.publish_layer_version(LayerName=name, Content={"ZipFile": data})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    out = body(resp)
    assert set(out) == {"Content", "CreatedDate", "Description", "LayerArn", "LayerVersionArn", "Version"}
    assert set(out["Content"]) == {"CodeSha256", "CodeSize", "Location"}
    assert out["Version"] == 1 and isinstance(out["Version"], int)
    assert out["Description"] == ""
    assert out["LayerArn"] == PREFIX + name
    assert out["LayerVersionArn"] == f"{PREFIX}{name}:1"
    assert CREATED_DATE.fullmatch(out["CreatedDate"])
    assert out["Content"]["CodeSize"] == len(data)
    assert out["Content"]["CodeSha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    with urllib.request.urlopen(out["Content"]["Location"]) as fh:
        assert fh.read() == data

    second = publish(lam, name, "two", Description="d", LicenseInfo="MIT",
                     CompatibleRuntimes=["python3.12", "python3.13"], CompatibleArchitectures=["arm64"])
    assert second["Version"] == 2 and second["LayerVersionArn"] == f"{PREFIX}{name}:2"
    assert second["Description"] == "d" and second["LicenseInfo"] == "MIT"
    assert second["CompatibleRuntimes"] == ["python3.12", "python3.13"]
    assert second["CompatibleArchitectures"] == ["arm64"]

    empty = publish(lam, name, "three", CompatibleRuntimes=[], CompatibleArchitectures=[])
    assert empty["Version"] == 3
    assert empty["CompatibleRuntimes"] == [] and empty["CompatibleArchitectures"] == []
    assert "LicenseInfo" not in empty


def test_get_layer_version(lam):
    name = unique("layer")
    published = body(publish(lam, name, CompatibleRuntimes=["python3.12"], LicenseInfo="MIT"))
    got = lam.get_layer_version(LayerName=name, VersionNumber=1)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert body(got) == published
    assert body(lam.get_layer_version(LayerName=PREFIX + name, VersionNumber=1)) == published

    for layer, version in ((name, 2), (unique("nolayer"), 1)):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            lam.get_layer_version(LayerName=layer, VersionNumber=version)
        assert error(exc) == ("ResourceNotFoundException", NOT_FOUND, 404)
    for version in (0, -1):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            lam.get_layer_version(LayerName=name, VersionNumber=version)
        assert error(exc) == ("InvalidParameterValueException", "Layer Version Cannot be less than 1", 400)
        assert exc.value.response["Type"] == "User"


def test_get_layer_version_by_arn(lam):
    name = unique("layer")
    published = body(publish(lam, name))
    got = lam.get_layer_version_by_arn(Arn=f"{PREFIX}{name}:1")
    assert body(got) == published

    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_layer_version_by_arn(Arn=f"{PREFIX}{name}:2")
    assert error(exc) == ("ResourceNotFoundException", NOT_FOUND, 404)

    with pytest.raises(lam.exceptions.ClientError) as exc:
        lam.get_layer_version_by_arn(Arn=PREFIX + name)
    assert error(exc) == (
        "ValidationException",
        f"1 validation error detected: Value '{PREFIX}{name}' at 'arn' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {LAYER_ARN_PATTERN}",
        400,
    )


def test_publish_validation(lam):
    with pytest.raises(lam.exceptions.ClientError) as exc:
        publish(lam, unique("layer"), CompatibleRuntimes=["invalidruntime", "python3.12"],
                CompatibleArchitectures=["invalidarch"])
    assert error(exc) == (
        "ValidationException",
        "2 validation errors detected: Value '[invalidruntime, python3.12]' at 'compatibleRuntimes' failed to "
        f"satisfy constraint: Member must satisfy enum value set: [{SUPPORTED}]; Value '[invalidarch]' at "
        "'compatibleArchitectures' failed to satisfy constraint: Member must satisfy constraint: "
        "[Member must satisfy enum value set: [x86_64, arm64], Member must not be null]",
        400,
    )
    # A deprecated runtime is still a known one.
    assert publish(lam, unique("layer"), CompatibleRuntimes=["python3.7"])["CompatibleRuntimes"] == ["python3.7"]

    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.publish_layer_version(LayerName=unique("layer"), Content={"S3Bucket": "nope", "S3Key": "k.zip"})
    assert error(exc)[0] == "InvalidParameterValueException"
    assert error(exc)[1].startswith("Error occurred while GetObject")

    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.publish_layer_version(LayerName=unique("layer"), Content={"ZipFile": b"not a zip"})
    assert error(exc)[1] == "Could not unzip uploaded file. Please check your file, then try to upload again."


# -- listing ---------------------------------------------------------------------------------------------------


def test_list_layer_versions(lam):
    name = unique("layer")
    publish(lam, name, "1", CompatibleRuntimes=["python3.12"], CompatibleArchitectures=["x86_64"])
    publish(lam, name, "2", CompatibleRuntimes=["python3.13"], CompatibleArchitectures=["arm64"], LicenseInfo="MIT")
    publish(lam, name, "3", CompatibleRuntimes=["python3.12", "python3.13"])
    publish(lam, name, "4")

    resp = lam.list_layer_versions(LayerName=name)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200 and "NextMarker" not in resp
    items = resp["LayerVersions"]
    assert [i["Version"] for i in items] == [4, 3, 2, 1]
    assert set(items[2]) == {"CompatibleArchitectures", "CompatibleRuntimes", "CreatedDate", "Description",
                             "LayerVersionArn", "LicenseInfo", "Version"}
    assert set(items[0]) == {"CreatedDate", "Description", "LayerVersionArn", "Version"}
    assert items[0]["LayerVersionArn"] == f"{PREFIX}{name}:4"
    assert body(lam.list_layer_versions(LayerName=PREFIX + name)) == body(resp)

    def versions(**filters) -> list[int]:
        return [i["Version"] for i in lam.list_layer_versions(LayerName=name, **filters)["LayerVersions"]]

    assert versions(CompatibleRuntime="python3.12") == [3, 1]
    assert versions(CompatibleRuntime="python3.13") == [3, 2]
    assert versions(CompatibleArchitecture="arm64") == [2]
    assert versions(CompatibleRuntime="python3.12", CompatibleArchitecture="x86_64") == [1]
    assert versions(CompatibleRuntime="nodejs20.x") == []

    first = lam.list_layer_versions(LayerName=name, MaxItems=3)
    assert [i["Version"] for i in first["LayerVersions"]] == [4, 3, 2] and first["NextMarker"]
    rest = lam.list_layer_versions(LayerName=name, MaxItems=3, Marker=first["NextMarker"])
    assert [i["Version"] for i in rest["LayerVersions"]] == [1] and "NextMarker" not in rest
    pages = list(lam.get_paginator("list_layer_versions").paginate(
        LayerName=name, PaginationConfig={"PageSize": 1}))
    assert len(pages) == 4
    assert [i["Version"] for p in pages for i in p["LayerVersions"]] == [4, 3, 2, 1]

    missing = lam.list_layer_versions(LayerName=unique("nolayer"))
    assert missing["ResponseMetadata"]["HTTPStatusCode"] == 200 and missing["LayerVersions"] == []

    with pytest.raises(lam.exceptions.ClientError) as exc:
        lam.list_layer_versions(LayerName=name, CompatibleArchitecture="x86")
    assert error(exc) == (
        "ValidationException",
        "1 validation error detected: Value 'x86' at 'compatibleArchitecture' failed to satisfy constraint: "
        "Member must satisfy enum value set: [x86_64, arm64]",
        400,
    )
    with pytest.raises(lam.exceptions.ClientError) as exc:
        lam.list_layer_versions(LayerName=name, CompatibleRuntime="cobol")
    code, message, status = error(exc)
    assert (code, status) == ("ValidationException", 400)
    assert message.startswith("1 validation error detected: Value 'cobol' at 'compatibleRuntime' failed to satisfy "
                              "constraint: Member must satisfy enum value set: [")
    assert "python2.7" in message  # the list includes deprecated runtimes


def test_list_layers(lam):
    tag = unique("ll")
    a, b, c = f"{tag}-a", f"{tag}-b", f"{tag}-c"
    publish(lam, a, CompatibleRuntimes=["python3.12"], CompatibleArchitectures=["x86_64"])
    publish(lam, a, CompatibleRuntimes=["python3.13"])
    publish(lam, b)
    publish(lam, b, LicenseInfo="MIT")
    publish(lam, c, CompatibleRuntimes=["python3.12"], CompatibleArchitectures=["arm64"])

    def mine(**filters) -> dict[str, dict]:
        found = {}
        for page in lam.get_paginator("list_layers").paginate(PaginationConfig={"PageSize": 2}, **filters):
            for item in page["Layers"]:
                if item["LayerName"].startswith(tag):
                    found[item["LayerName"]] = item
        return found

    everything = mine()
    assert sorted(everything) == [a, b, c]
    assert set(everything[b]) == {"LayerName", "LayerArn", "LatestMatchingVersion"}
    assert everything[b]["LayerArn"] == PREFIX + b
    latest = everything[b]["LatestMatchingVersion"]
    assert latest["Version"] == 2 and latest["LayerVersionArn"] == f"{PREFIX}{b}:2" and latest["LicenseInfo"] == "MIT"
    assert "Content" not in latest and "LayerArn" not in latest
    assert everything[a]["LatestMatchingVersion"]["Version"] == 2

    py312 = mine(CompatibleRuntime="python3.12")
    assert sorted(py312) == [a, c]
    assert py312[a]["LatestMatchingVersion"]["Version"] == 1
    assert sorted(mine(CompatibleArchitecture="arm64")) == [c]
    assert sorted(mine(CompatibleRuntime="python3.12", CompatibleArchitecture="x86_64")) == [a]


# -- delete ---------------------------------------------------------------------------------------------------


def test_delete_and_numbering(lam):
    name = unique("layer")
    publish(lam, name, "1")
    publish(lam, name, "2")
    for version in (1, 2):
        resp = lam.delete_layer_version(LayerName=name, VersionNumber=version)
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_layer_version(LayerName=name, VersionNumber=1)
    assert lam.list_layer_versions(LayerName=name)["LayerVersions"] == []
    assert publish(lam, name, "3")["Version"] == 3

    # Idempotent, also for layers and versions that never existed.
    assert lam.delete_layer_version(LayerName=name, VersionNumber=1)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.delete_layer_version(LayerName=name, VersionNumber=99)["ResponseMetadata"]["HTTPStatusCode"] == 204
    missing = lam.delete_layer_version(LayerName=unique("nolayer"), VersionNumber=1)
    assert missing["ResponseMetadata"]["HTTPStatusCode"] == 204
    for version in (0, -1):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            lam.delete_layer_version(LayerName=name, VersionNumber=version)
        assert error(exc) == ("InvalidParameterValueException", "Layer Version Cannot be less than 1", 400)


def test_delete_keeps_shared_code(lam):
    """Two layer versions with the same bytes share one stored package; deleting one keeps the other's."""
    name = unique("layer")
    v1 = publish(lam, name, "same")
    v2 = publish(lam, name, "same")
    assert v1["Content"]["CodeSha256"] == v2["Content"]["CodeSha256"]
    lam.delete_layer_version(LayerName=name, VersionNumber=1)
    location = lam.get_layer_version(LayerName=name, VersionNumber=2)["Content"]["Location"]
    with urllib.request.urlopen(location) as fh:
        assert fh.read() == layer_zip("same")
    lam.delete_layer_version(LayerName=name, VersionNumber=2)
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(location)


def test_layer_and_function_sharing_code(lam):
    """A layer and a function uploaded from the same bytes share one package: deleting either keeps the other's.
    (Needs the registry to ask `faas.store.layers.package_in_use` before dropping a package.)"""
    data = make_zip({"app.py": f"def handler(event, context):\n    return {unique('shared')!r}\n"})
    fn = unique()
    lam.create_function(FunctionName=fn, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": data})
    name = unique("layer")
    layer = lam.publish_layer_version(LayerName=name, Content={"ZipFile": data})
    assert lam.delete_function(FunctionName=fn)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with urllib.request.urlopen(layer["Content"]["Location"]) as fh:
        assert fh.read() == data

    fn2 = unique()
    lam.create_function(FunctionName=fn2, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": data})
    lam.delete_layer_version(LayerName=name, VersionNumber=1)
    with urllib.request.urlopen(lam.get_function(FunctionName=fn2)["Code"]["Location"]) as fh:
        assert fh.read() == data
    lam.delete_function(FunctionName=fn2)


# -- permissions ----------------------------------------------------------------------------------------------


def test_layer_permissions(lam):
    name = unique("layer")
    publish(lam, name)
    arn = f"{PREFIX}{name}:1"

    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert error(exc) == ("ResourceNotFoundException", "No policy is associated with the given resource.", 404)

    added = lam.add_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="everyone", Action="lambda:GetLayerVersion", Principal="*",
    )
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert set(body(added)) == {"Statement", "RevisionId"}
    assert isinstance(added["Statement"], str)
    assert json.loads(added["Statement"]) == {
        "Sid": "everyone", "Effect": "Allow", "Principal": "*", "Action": "lambda:GetLayerVersion", "Resource": arn,
    }

    with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
        lam.add_layer_version_permission(
            LayerName=name, VersionNumber=1, StatementId="everyone", Action="lambda:GetLayerVersion", Principal="*",
        )
    assert error(exc) == (
        "ResourceConflictException",
        "The statement id (everyone) provided already exists. Please provide a new statement id, or remove the "
        "existing statement.",
        409,
    )
    with pytest.raises(lam.exceptions.PreconditionFailedException) as exc:
        lam.add_layer_version_permission(
            LayerName=name, VersionNumber=1, StatementId="acct", Action="lambda:GetLayerVersion",
            Principal="123456789012", RevisionId="stale",
        )
    assert error(exc) == ("PreconditionFailedException", REVISION_MISMATCH, 412)

    org = lam.add_layer_version_permission(
        LayerName=PREFIX + name, VersionNumber=1, StatementId="org", Action="lambda:GetLayerVersion",
        Principal="*", OrganizationId="o-abcdefghij", RevisionId=added["RevisionId"],
    )
    assert org["RevisionId"] != added["RevisionId"]
    assert json.loads(org["Statement"])["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}}
    acct = lam.add_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="acct", Action="lambda:GetLayerVersion",
        Principal="123456789012",
    )
    assert json.loads(acct["Statement"])["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}

    policy = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert set(body(policy)) == {"Policy", "RevisionId"} and policy["RevisionId"] == acct["RevisionId"]
    doc = json.loads(policy["Policy"])
    assert doc["Version"] == "2012-10-17" and doc["Id"] == "default"
    assert [s["Sid"] for s in doc["Statement"]] == ["everyone", "org", "acct"]
    assert all(s["Resource"] == arn for s in doc["Statement"])

    with pytest.raises(lam.exceptions.PreconditionFailedException) as exc:
        lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="org", RevisionId="stale")
    assert error(exc) == ("PreconditionFailedException", REVISION_MISMATCH, 412)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="nobody")
    assert error(exc) == ("ResourceNotFoundException", "Statement nobody is not found in resource policy.", 404)

    removed = lam.remove_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="org", RevisionId=policy["RevisionId"],
    )
    assert removed["ResponseMetadata"]["HTTPStatusCode"] == 204
    after = lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert after["RevisionId"] != policy["RevisionId"]
    assert [s["Sid"] for s in json.loads(after["Policy"])["Statement"]] == ["everyone", "acct"]
    lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="everyone")
    lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="acct")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert error(exc)[1] == "No policy is associated with the given resource."


def test_layer_permission_errors(lam):
    name = unique("layer")
    publish(lam, name)
    missing = f"{PREFIX}{name}:2"
    calls = (
        lambda: lam.add_layer_version_permission(
            LayerName=name, VersionNumber=2, StatementId="s", Action="lambda:GetLayerVersion", Principal="*"),
        lambda: lam.get_layer_version_policy(LayerName=name, VersionNumber=2),
        lambda: lam.remove_layer_version_permission(LayerName=name, VersionNumber=2, StatementId="s"),
    )
    for call in calls:
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            call()
        assert error(exc) == ("ResourceNotFoundException", f"Layer version {missing} does not exist.", 404)
    other = unique("nolayer")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_layer_version_policy(LayerName=other, VersionNumber=1)
    assert error(exc)[1] == f"Layer version {PREFIX}{other}:1 does not exist."

    with pytest.raises(lam.exceptions.ClientError) as exc:
        lam.add_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="s", Action="*", Principal="*")
    assert error(exc) == (
        "ValidationException",
        "1 validation error detected: Value '*' at 'action' failed to satisfy constraint: Member must satisfy "
        "regular expression pattern: lambda:GetLayerVersion",
        400,
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="s")
    assert error(exc)[1] == "No policy is associated with the given resource."


# -- a function's Layers (store-level, no server) ----------------------------------------------------------------


@pytest.fixture
async def layer_services(tmp_path: Path):
    db = Database(tmp_path / "db.sqlite", synchronous="OFF")
    await db.open()
    code = CodeStore(tmp_path / "code")
    svc = types.SimpleNamespace(arns=Arns(REGION, ACCOUNT), layers=Layers(db), code=code)
    yield svc
    await db.close()


async def test_resolve_function_layers(layer_services):
    svc = layer_services
    a = await svc.layers.publish("a", await svc.code.put(layer_zip("a")))
    await svc.layers.publish("a", await svc.code.put(layer_zip("a2")))
    b = await svc.layers.publish("b", await svc.code.put(layer_zip("b")))

    refs = await resolve_function_layers(svc, [f"{PREFIX}b:1", f"{PREFIX}a:1"])
    assert [(r.arn, r.code_size, r.sha256) for r in refs] == [
        (f"{PREFIX}b:1", b.code_size, b.code_sha256), (f"{PREFIX}a:1", a.code_size, a.code_sha256),
    ]
    assert await resolve_function_layers(svc, []) == []

    async def fails(arns: list[str]) -> tuple[type, str]:
        with pytest.raises((InvalidParameterValueException, ValidationException)) as exc:
            await resolve_function_layers(svc, arns)
        return type(exc.value), exc.value.message

    assert await fails([f"{PREFIX}a:1"] * 6) == (InvalidParameterValueException, "Cannot reference more than 5 layers.")
    assert await fails([f"{PREFIX}a:1", f"{PREFIX}b:1", f"{PREFIX}a:2"]) == (
        InvalidParameterValueException,
        "Two different versions of the same layer are not allowed to be referenced in the same function. "
        f"{PREFIX}a:1 and {PREFIX}a:2 are versions of the same layer.",
    )
    assert await fails([f"{PREFIX}b:1", f"{PREFIX}b:1"]) == (
        InvalidParameterValueException,
        "Two different versions of the same layer are not allowed to be referenced in the same function. "
        f"{PREFIX}b:1 and {PREFIX}b:1 are versions of the same layer.",
    )
    assert await fails([f"arn:aws:lambda:eu-west-1:{ACCOUNT}:layer:a:1"]) == (
        InvalidParameterValueException,
        f"Layers are not in the same region as the function. Layers are expected to be in region {REGION}.",
    )
    assert await fails([f"{PREFIX}a:1", f"{PREFIX}b:7"]) == (
        InvalidParameterValueException, f"Layer version {PREFIX}b:7 does not exist.",
    )
    assert await fails([f"arn:aws:lambda:{REGION}:123456789012:layer:a:1"]) == (
        InvalidParameterValueException, f"Layer version arn:aws:lambda:{REGION}:123456789012:layer:a:1 does not exist.",
    )
    kind, message = await fails([PREFIX + "a"])
    assert kind is ValidationException
    assert message == (
        f"1 validation error detected: Value '[{PREFIX}a]' at 'layers' failed to satisfy constraint: Member must "
        "satisfy constraint: [Member must have length less than or equal to 2048, Member must have length greater "
        f"than or equal to 1, Member must satisfy regular expression pattern: {LAYER_ARN_PATTERN}, "
        "Member must not be null]"
    )
    assert rewrite_layers_errors({"Layers": [PREFIX + "a"]}, ["x at 'layers' y", "other"]) == [
        message.removeprefix("1 validation error detected: "), "other",
    ]
    assert rewrite_layers_errors({"Layers": [f"{PREFIX}a:1"]}, ["x at 'layers' y"]) == []
    with pytest.raises(ValidationException) as exc:
        check_layers_errors({"Layers": [PREFIX + "a"]}, ["x at 'layers' y", "Value 'r' at 'role' z"])
    assert exc.value.message == (
        "2 validation errors detected: " + message.removeprefix("1 validation error detected: ") + "; Value 'r' at "
        "'role' z"
    )
    aws_layer = "arn:aws:lambda:::awslayer:AWSLambda-Python-AWS-SDK"
    with pytest.raises(InvalidParameterValueException) as exc:
        check_layers_errors({"Layers": [aws_layer]}, ["x at 'layers' y"])
    assert exc.value.message == f"Layer version {aws_layer} does not exist."
    assert check_layers_errors({"Layers": [PREFIX + "a"]}, ["Value 'r' at 'role' z"]) is None


async def test_layer_code_outlives_delete_while_a_function_names_it(layer_services):
    svc = layer_services
    pkg = await svc.code.put(layer_zip("kept"))
    await svc.layers.publish("keep", pkg)
    async with svc.layers.db.transaction() as conn:
        await conn.execute(
            "INSERT INTO functions(name, created_at) VALUES ('f', 'now')")
        await conn.execute(
            "INSERT INTO code_packages(sha256, size, unzipped_size, created_at) VALUES ('00', 1, 1, 'now')")
        await conn.execute(
            "INSERT INTO versions(function_name, version, config, code_sha256, revision_id, last_modified, state)"
            " VALUES ('f', '$LATEST', ?, '00', 'r', 'now', 'Active')",
            (json.dumps({"Role": "r", "Layers": [{"Arn": f"{PREFIX}keep:1", "Sha256": pkg.sha256}]}),),
        )
    assert await svc.layers.delete("keep", 1) is None  # still needed
    assert await svc.layers.get("keep", 1) is None
    other = await svc.code.put(layer_zip("gone"))
    await svc.layers.publish("gone", other)
    assert await svc.layers.delete("gone", 1) == other.sha256


# -- /opt ---------------------------------------------------------------------------------------------------------


def _zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = mode << 16
            zf.writestr(info, content)
    return buf.getvalue()


FILE, LINK = stat.S_IFREG | 0o644, stat.S_IFLNK | 0o777


async def test_assemble_opt_merges_in_order(tmp_path: Path):
    code = CodeStore(tmp_path / "code")
    first = await code.put(_zip([
        ("shared.txt", b"first", FILE),
        ("only-first.txt", b"1", FILE),
        ("bin/tool", b"#!/bin/sh\necho first\n", stat.S_IFREG | 0o755),
        ("python/pkg/__init__.py", b"", FILE),
        ("python/pkg/a.py", b"A = 1\n", FILE),
        ("here", b".", LINK),  # a link to the layer root
        ("lib", b"python", LINK),
    ]))
    second = await code.put(_zip([
        ("shared.txt", b"second", FILE),
        ("python/pkg/b.py", b"B = 2\n", FILE),
        ("current", b"shared.txt", LINK),
        ("up", b"here/..", LINK),  # inside this layer alone; through `here` from the first, outside /opt
        ("lib/own.txt", b"real dir", FILE),  # a directory where the first layer had a link
    ]))
    root = tmp_path / "opt"

    merged = await assemble_opt(code, root, [first.sha256, second.sha256])
    assert merged.parent == root and merged.is_dir()
    assert (merged / "shared.txt").read_bytes() == b"second"
    assert (merged / "only-first.txt").read_bytes() == b"1"
    assert sorted(os.listdir(merged / "python" / "pkg")) == ["__init__.py", "a.py", "b.py"]
    assert os.stat(merged / "bin" / "tool").st_mode & 0o111 == 0o111
    assert os.readlink(merged / "current") == "shared.txt" and (merged / "current").read_bytes() == b"second"
    assert os.readlink(merged / "here") == "."
    assert not os.path.lexists(merged / "up")
    assert (merged / "lib").is_dir() and not (merged / "lib").is_symlink()
    assert (merged / "lib" / "own.txt").read_bytes() == b"real dir"
    # Hard links into the store where the file system allows.
    assert os.stat(merged / "only-first.txt").st_ino == os.stat(code.tree(first.sha256) / "only-first.txt").st_ino

    assert await assemble_opt(code, root, [first.sha256, second.sha256]) == merged  # cached
    reverse = await assemble_opt(code, root, [second.sha256, first.sha256])
    assert reverse != merged
    assert (reverse / "shared.txt").read_bytes() == b"first"
    assert os.readlink(reverse / "lib") == "python"
    assert not os.path.lexists(reverse / "up")  # `here` (from the first layer) still makes it escape

    # Store deletion does not break an assembled /opt; the work area is left empty.
    await code.delete(first.sha256)
    assert (merged / "only-first.txt").read_bytes() == b"1"
    assert os.listdir(root / "tmp") == []
    with pytest.raises(FileNotFoundError):
        await assemble_opt(code, root, [first.sha256])

    empty = await assemble_opt(code, root, [])
    assert empty.is_dir() and os.listdir(empty) == []
