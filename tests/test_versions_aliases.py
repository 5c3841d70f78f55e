"""Versions, aliases, weighted routing, qualifiers and tags through boto3 against the real server."""

from __future__ import annotations

import base64
import collections
import json
import re

import pytest
from botocore.exceptions import ClientError

from conftest import create_function, make_zip, unique

V = "import os\nVERSION = {v!r}\ndef handler(event, context):\n    print('running', VERSION)\n    return {{'code': VERSION, 'version': context.function_version, 'arn': context.invoked_function_arn, 'pid': os.getpid()}}\n"


def code(v: str) -> bytes:
    return make_zip({"app.py": V.format(v=v)})


def arn(name: str, q: str | None = None) -> str:
    base = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    return f"{base}:{q}" if q else base


def run(lam, name: str, **kwargs) -> tuple[dict, dict]:
    resp = lam.invoke(FunctionName=name, **kwargs)
    body = json.loads(resp["Payload"].read())
    assert "FunctionError" not in resp, body
    return resp, body


def error(exc) -> tuple[str, str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def test_publish_and_immutable_versions(lam):
    name, created = create_function(lam, {"app.py": V.format(v="one")}, Description="first")
    v1 = lam.publish_version(FunctionName=name)
    assert v1["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert v1["Version"] == "1" and v1["FunctionArn"] == arn(name, "1")
    assert v1["State"] == "Active" and v1["LastUpdateStatus"] == "Successful"
    assert v1["Description"] == "first" and "StateReason" not in v1
    again = lam.publish_version(FunctionName=name, Description="ignored")
    assert (again["Version"], again["RevisionId"]) == ("1", v1["RevisionId"])

    lam.update_function_code(FunctionName=name, ZipFile=code("two"))
    lam.update_function_configuration(FunctionName=name, Description="second", Environment={"Variables": {"X1": "y"}})
    assert run(lam, name)[1]["code"] == "two"
    resp, body = run(lam, name, Qualifier="1", LogType="Tail")
    assert body["code"] == "one" and body["version"] == "1"
    assert body["arn"] == arn(name, "1")
    assert resp["ExecutedVersion"] == "1"
    assert re.search(r"START RequestId: \S+ Version: 1\n", base64.b64decode(resp["LogResult"]).decode())
    assert run(lam, f"{name}:1")[1]["code"] == "one"
    assert run(lam, arn(name, "1"))[1]["code"] == "one"
    conf1 = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert conf1["Description"] == "first" and "Environment" not in conf1
    assert conf1["FunctionArn"] == arn(name, "1")
    got = lam.get_function(FunctionName=f"{name}:1")
    assert got["Configuration"]["CodeSha256"] == v1["CodeSha256"]

    v2 = lam.publish_version(FunctionName=name, Description="v2 notes")
    assert v2["Version"] == "2" and v2["Description"] == "v2 notes"
    assert run(lam, name, Qualifier="2")[1]["code"] == "two"


def test_publish_preconditions(lam):
    name, created = create_function(lam, {"app.py": V.format(v="a")})
    with pytest.raises(lam.exceptions.PreconditionFailedException) as exc:
        lam.publish_version(FunctionName=name, RevisionId="stale")
    assert error(exc)[2] == 412
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.publish_version(FunctionName=name, CodeSha256="abc")
    assert error(exc)[1] == (
        f"CodeSHA256 (abc) is different from current CodeSHA256 in $LATEST ({created['CodeSha256']}). "
        "Please try again with the CodeSHA256 in $LATEST."
    )
    ok = lam.publish_version(FunctionName=name, CodeSha256=created["CodeSha256"], RevisionId=created["RevisionId"])
    assert ok["Version"] == "1"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.publish_version(FunctionName=unique("missing"))


def test_publish_flag_on_create_and_update_code(lam):
    name, created = create_function(lam, {"app.py": V.format(v="a")}, Publish=True)
    assert created["Version"] == "1" and created["FunctionArn"] == arn(name)
    updated = lam.update_function_code(FunctionName=name, ZipFile=code("b"), Publish=True)
    assert updated["Version"] == "2"
    assert run(lam, name, Qualifier="2")[1]["code"] == "b"
    assert run(lam, name, Qualifier="1")[1]["code"] == "a"


def test_list_versions_pagination(lam):
    name, _ = create_function(lam, {"app.py": V.format(v="0")})
    for i in range(1, 5):
        lam.update_function_code(FunctionName=name, ZipFile=code(str(i)))
        lam.publish_version(FunctionName=name)
    listed, marker = [], None
    while True:
        page = lam.list_versions_by_function(FunctionName=name, MaxItems=2, **({"Marker": marker} if marker else {}))
        listed += page["Versions"]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert [v["Version"] for v in listed] == ["$LATEST", "1", "2", "3", "4"]
    assert listed[0]["FunctionArn"] == arn(name, "$LATEST")
    assert all("State" not in v and "LastUpdateStatus" not in v for v in listed)
    everything = [v["Version"] for p in lam.get_paginator("list_versions_by_function").paginate(FunctionName=name)
                  for v in p["Versions"]]
    assert everything == ["$LATEST", "1", "2", "3", "4"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_versions_by_function(FunctionName=unique("missing"))


def test_list_functions_all_versions(lam):
    name, _ = create_function(lam, {"app.py": V.format(v="x")}, Publish=True)
    arns = [f["FunctionArn"] for p in lam.get_paginator("list_functions").paginate(
        FunctionVersion="ALL", PaginationConfig={"PageSize": 3}) for f in p["Functions"]]
    assert arn(name, "$LATEST") in arns and arn(name, "1") in arns
    assert arns.index(arn(name, "$LATEST")) + 1 == arns.index(arn(name, "1"))
    plain = [f["FunctionArn"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]]
    assert arn(name) in plain and arn(name, "1") not in plain


def test_aliases_crud(lam):
    name, _ = create_function(lam, {"app.py": V.format(v="a")}, Publish=True)
    lam.update_function_code(FunctionName=name, ZipFile=code("b"))
    lam.publish_version(FunctionName=name)
    created = lam.create_alias(FunctionName=name, Name="prod", FunctionVersion="1", Description="live")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert set(created) - {"ResponseMetadata"} == {"AliasArn", "Description", "FunctionVersion", "Name", "RevisionId"}
    assert created["AliasArn"] == arn(name, "prod")
    got = lam.get_alias(FunctionName=name, Name="prod")
    assert got["RevisionId"] == created["RevisionId"] and got["Description"] == "live"
    resp, body = run(lam, name, Qualifier="prod")
    assert body["code"] == "a" and resp["ExecutedVersion"] == "1"
    assert body["arn"] == arn(name, "prod")
    conf = lam.get_function(FunctionName=name, Qualifier="prod")["Configuration"]
    assert conf["FunctionArn"] == arn(name, "prod") and conf["Version"] == "1"

    moved = lam.update_alias(FunctionName=name, Name="prod", FunctionVersion="2", RevisionId=created["RevisionId"])
    assert moved["FunctionVersion"] == "2" and moved["RevisionId"] != created["RevisionId"]
    assert run(lam, f"{name}:prod")[0]["ExecutedVersion"] == "2"
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_alias(FunctionName=name, Name="prod", FunctionVersion="1", RevisionId=created["RevisionId"])

    lam.create_alias(FunctionName=name, Name="dev", FunctionVersion="$LATEST")
    lam.create_alias(FunctionName=name, Name="old", FunctionVersion="1")
    names = [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]]
    assert names == ["dev", "old", "prod"]
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name, FunctionVersion="1")["Aliases"]] == ["old"]
    paged = [a["Name"] for p in lam.get_paginator("list_aliases").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 1}) for a in p["Aliases"]]
    assert paged == ["dev", "old", "prod"]
    assert lam.delete_alias(FunctionName=name, Name="dev")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.delete_alias(FunctionName=name, Name="dev")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_alias(FunctionName=name, Name="dev")
    assert error(exc)[1] == f"Cannot find alias arn: {arn(name, 'dev')}"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.update_alias(FunctionName=name, Name="dev", FunctionVersion="1")
    assert error(exc)[1] == f"Alias not found: {arn(name, 'dev')}"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.invoke(FunctionName=name, Qualifier="dev")
    assert error(exc)[1] == f"Function not found: {arn(name, 'dev')}"


def test_alias_errors(lam):
    name, _ = create_function(lam, {"app.py": V.format(v="a")}, Publish=True)
    lam.publish_version(FunctionName=name)  # nothing changed: still only version 1
    lam.update_function_configuration(FunctionName=name, Description="v2")
    lam.publish_version(FunctionName=name)

    def fails(**kwargs):
        with pytest.raises(ClientError) as exc:
            lam.create_alias(**{"FunctionName": name, "Name": "a" + unique("x")[-6:], **kwargs})
        return error(exc)

    assert fails(FunctionVersion="10") == ("ResourceNotFoundException", f"Function not found: {arn(name, '10')}", 404)
    assert fails(FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"10": 0.5}})[1] == (
        f"Function not found: {arn(name, '10')}")
    assert fails(FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5, "3": 0.1}}) == (
        "InvalidParameterValueException", "Number of items in AdditionalVersionWeights cannot be greater than 1", 400)
    assert fails(FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 2}}) == (
        "ValidationException",
        "1 validation error detected: Value '{2=2.0}' at 'routingConfig.additionalVersionWeights' failed to satisfy "
        "constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, "
        "Member must have value greater than or equal to 0.0, Member must not be null]",
        400,
    )
    assert fails(FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}})[1] == (
        "Invalid function version 1. Function version 1 is already included in routing configuration.")
    assert fails(FunctionVersion="$LATEST", RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}})[1] == (
        "$LATEST is not supported for an alias pointing to more than 1 version")
    assert fails(FunctionVersion="1", Name="2024")[0] == "ValidationException"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.create_alias(FunctionName=unique("missing"), Name="x", FunctionVersion="1")
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert error(exc)[1] == f"Alias already exists: {arn(name, 'live')}"
    empty = lam.create_alias(FunctionName=name, Name="plain", FunctionVersion="1",
                             RoutingConfig={"AdditionalVersionWeights": {}})
    assert "RoutingConfig" not in empty


def test_delete_versions(lam):
    name, _ = create_function(lam, {"app.py": V.format(v="a")}, Publish=True)
    lam.update_function_code(FunctionName=name, ZipFile=code("b"))
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=code("c"))
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="blue", FunctionVersion="1")
    lam.create_alias(FunctionName=name, Name="green", FunctionVersion="3",
                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}})
    for version, alias in (("1", "blue"), ("2", "green")):
        with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
            lam.delete_function(FunctionName=name, Qualifier=version)
        assert error(exc) == ("ResourceConflictException",
                              f"Unable to delete version because the following aliases reference it: [{alias}]", 409)
    lam.update_alias(FunctionName=name, Name="green", RoutingConfig={"AdditionalVersionWeights": {}})
    assert lam.delete_function(FunctionName=name, Qualifier="2")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.delete_function(FunctionName=f"{name}:2")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="2")
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST", "1", "3"]
    assert run(lam, name)[1]["code"] == "c"
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.delete_function(FunctionName=name, Qualifier="blue")
    assert error(exc)[1] == "Deletion of aliases is not currently supported."
    # Version numbers are never reused.
    lam.update_function_code(FunctionName=name, ZipFile=code("d"))
    assert lam.publish_version(FunctionName=name)["Version"] == "4"
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="blue")


def test_weighted_alias_split(lam):
    name, _ = create_function(lam, {"app.py": V.format(v="a")}, Publish=True)
    lam.update_function_code(FunctionName=name, ZipFile=code("b"))
    lam.publish_version(FunctionName=name)
    created = lam.create_alias(FunctionName=name, Name="canary", FunctionVersion="1",
                               RoutingConfig={"AdditionalVersionWeights": {"2": 0.2}})
    assert created["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.2}}
    counts = collections.Counter()
    for _ in range(2000):
        resp, body = run(lam, name, Qualifier="canary")
        counts[resp["ExecutedVersion"]] += 1
        assert body["code"] == {"1": "a", "2": "b"}[resp["ExecutedVersion"]]
    share = counts["2"] / 2000
    print(f"weighted split over 2000 invokes: version 2 got {share:.2%}")
    assert abs(share - 0.2) <= 0.03


def test_instances_are_per_version(lam):
    name, _ = create_function(lam, {"app.py": V.format(v="a")}, Publish=True)
    latest_pid = run(lam, name)[1]["pid"]
    v1_pid = run(lam, name, Qualifier="1")[1]["pid"]
    assert v1_pid != latest_pid
    assert run(lam, name, Qualifier="1")[1]["pid"] == v1_pid
    lam.update_function_code(FunctionName=name, ZipFile=code("b"))
    after = run(lam, name)[1]
    assert after["code"] == "b" and after["pid"] != latest_pid
    assert run(lam, name, Qualifier="1")[1]["pid"] == v1_pid, "updating $LATEST leaves version 1 warm"


def test_tags(lam):
    name, _ = create_function(lam, {"app.py": V.format(v="a")}, Tags={"a": "1"})
    fn = arn(name)
    assert lam.list_tags(Resource=fn)["Tags"] == {"a": "1"}
    assert lam.tag_resource(Resource=fn, Tags={"b": "2", "a": "3"})["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.list_tags(Resource=fn)["Tags"] == {"a": "3", "b": "2"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"a": "3", "b": "2"}
    lam.untag_resource(Resource=fn, TagKeys=["a", "missing"])
    assert lam.list_tags(Resource=fn)["Tags"] == {"b": "2"}
    lam.untag_resource(Resource=fn, TagKeys=["b"])
    assert lam.list_tags(Resource=fn)["Tags"] == {}
    assert "Tags" not in lam.get_function(FunctionName=name)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.tag_resource(Resource=f"{fn}:$LATEST", Tags={"x": "y"})
    assert error(exc)[1] == "Tags on function aliases and versions are not supported. Please specify a function ARN."
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.tag_resource(Resource=fn, Tags={})
    assert error(exc)[1] == "An error occurred and the request cannot be processed."
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.tag_resource(Resource=fn, Tags={f"k{i}": "v" for i in range(51)})
    assert error(exc)[1] == "Number of tags exceeds resource tag limit."
    with pytest.raises(ClientError) as exc:
        lam.untag_resource(Resource=fn)
    assert error(exc)[0:2] == ("ValidationException", "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null")
    missing = arn(unique("missing"))
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.list_tags(Resource=missing)
    assert error(exc)[1] == f"Function not found: {missing}"
