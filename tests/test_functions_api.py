"""Function CRUD through boto3, against the real server: shapes, defaults, pagination and errors."""

from __future__ import annotations

import base64
import hashlib
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ROLE, create_function, make_zip, unique

HELLO = "def handler(event, context):\n    return {'ok': True}\n"

CREATE_KEYS = {
    "Architectures", "CodeSha256", "CodeSize", "Description", "EphemeralStorage", "FunctionArn", "FunctionName",
    "Handler", "LastModified", "LoggingConfig", "MemorySize", "PackageType", "RevisionId", "Role", "Runtime",
    "RuntimeVersionConfig", "SnapStart", "State", "StateReason", "StateReasonCode", "Timeout", "TracingConfig",
    "Version",
}
GET_KEYS = (CREATE_KEYS - {"StateReason", "StateReasonCode"}) | {"LastUpdateStatus"}
LIST_KEYS = GET_KEYS - {"State", "LastUpdateStatus", "RuntimeVersionConfig"}


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_create_function_response(lam):
    code = make_zip({"app.py": HELLO})
    name = unique()
    resp = lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                               Code={"ZipFile": code})
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert set(resp) - {"ResponseMetadata"} == CREATE_KEYS
    assert resp["State"] == "Pending"
    assert resp["StateReason"] == "The function is being created."
    assert resp["StateReasonCode"] == "Creating"
    assert resp["Version"] == "$LATEST"
    assert resp["FunctionArn"] == arn(name)
    assert resp["CodeSha256"] == base64.b64encode(hashlib.sha256(code).digest()).decode()
    assert resp["CodeSize"] == len(code)
    assert resp["Description"] == ""
    assert resp["MemorySize"] == 128 and resp["Timeout"] == 3
    assert resp["Architectures"] == ["x86_64"]
    assert resp["EphemeralStorage"] == {"Size": 512}
    assert resp["TracingConfig"] == {"Mode": "PassThrough"}
    assert resp["PackageType"] == "Zip"
    assert resp["SnapStart"] == {"ApplyOn": "None", "OptimizationStatus": "Off"}
    assert resp["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}
    assert resp["RuntimeVersionConfig"]["RuntimeVersionArn"].startswith("arn:aws:lambda:us-east-1::runtime:")
    assert "Environment" not in resp and "LastUpdateStatus" not in resp
    # LastModified in AWS's format: 2024-01-01T12:00:00.000+0000
    assert resp["LastModified"][10] == "T" and resp["LastModified"].endswith("+0000")
    assert len(resp["LastModified"]) == len("2024-01-01T12:00:00.000+0000")


def test_get_function_and_waiters(lam):
    name, created = create_function(lam, HELLO, Environment={"Variables": {}}, Tags={"team": "core"})
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    got = lam.get_function(FunctionName=name)
    assert set(got) - {"ResponseMetadata"} == {"Configuration", "Code", "Tags"}
    assert got["Tags"] == {"team": "core"}
    conf = got["Configuration"]
    assert set(conf) == GET_KEYS | {"Environment"}
    assert conf["State"] == "Active" and conf["LastUpdateStatus"] == "Successful"
    assert conf["Environment"] == {"Variables": {}}
    assert conf["RevisionId"] == created["RevisionId"]
    assert got["Code"]["RepositoryType"] == "S3"
    with urllib.request.urlopen(got["Code"]["Location"]) as fh:
        assert fh.read() == make_zip({"app.py": HELLO})
    alone = lam.get_function_configuration(FunctionName=name)
    alone.pop("ResponseMetadata")
    assert alone == conf
    # Qualified forms of the name.
    assert lam.get_function(FunctionName=arn(name))["Configuration"]["FunctionArn"] == arn(name)
    assert lam.get_function(FunctionName=f"000000000000:function:{name}")["Configuration"]["FunctionName"] == name
    latest = lam.get_function(FunctionName=name, Qualifier="$LATEST")["Configuration"]
    assert latest["FunctionArn"] == arn(name, "$LATEST")
    assert lam.get_function(FunctionName=f"{name}:$LATEST")["Configuration"]["FunctionArn"] == arn(name, "$LATEST")


def test_get_function_without_tags_has_no_tags_key(lam):
    name, _ = create_function(lam, HELLO)
    assert "Tags" not in lam.get_function(FunctionName=name)


def test_not_found_messages(lam):
    name = unique("missing")
    for call in (lam.get_function, lam.get_function_configuration, lam.delete_function):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            call(FunctionName=name)
        assert error_of(exc) == ("ResourceNotFoundException", f"Function not found: {arn(name)}", 404)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.invoke(FunctionName=name)
    assert error_of(exc)[1] == f"Function not found: {arn(name, '$LATEST')}"
    existing, _ = create_function(lam, HELLO)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_function(FunctionName=existing, Qualifier="1221")
    assert error_of(exc)[1] == f"Function not found: {arn(existing, '1221')}"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_function(FunctionName=existing, Qualifier="$latest")
    assert error_of(exc)[1] == f"Function not found: {arn(existing, '$latest')}"


def test_name_and_qualifier_validation(lam):
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName="my-function!")
    code, message, status = error_of(exc)
    assert (code, status) == ("ValidationException", 400)
    assert message.startswith("1 validation error detected: Value 'my-function!' at 'functionName' failed to satisfy")
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName="fn", Qualifier="invalid!")
    assert error_of(exc)[1] == (
        "1 validation error detected: Value 'invalid!' at 'qualifier' failed to satisfy constraint: "
        r"Member must satisfy regular expression pattern: \$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+"
    )
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.get_function(FunctionName="arn:aws:lambda:eu-west-1:000000000000:function:fn")
    assert error_of(exc)[1] == "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName="arn:aws:lambda:us-east-1:111111111111:function:fn")
    assert error_of(exc)[0::2] == ("AccessDeniedException", 403)
    name, _ = create_function(lam, HELLO)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.get_function(FunctionName=f"{name}:1", Qualifier="$LATEST")
    assert error_of(exc)[1] == "The derived qualifier from the function name does not match the specified qualifier."


def test_create_validation_errors(lam):
    code = {"ZipFile": make_zip({"app.py": HELLO})}
    base = dict(Runtime="python3.12", Role=ROLE, Handler="app.handler", Code=code)

    def create_error(**overrides):
        with pytest.raises(ClientError) as exc:
            lam.create_function(**{"FunctionName": unique(), **base, **overrides})
        return error_of(exc)

    assert create_error(Role="r1") == (
        "ValidationException",
        "1 validation error detected: Value 'r1' at 'role' failed to satisfy constraint: Member must satisfy "
        r"regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+",
        400,
    )
    assert create_error(MemorySize=20000) == (
        "ValidationException",
        "1 validation error detected: Value '20000' at 'memorySize' failed to satisfy constraint: "
        "Member must have value less than or equal to 10240",
        400,
    )
    assert create_error(Timeout=901)[0:2] == (
        "ValidationException",
        "1 validation error detected: Value '901' at 'timeout' failed to satisfy constraint: "
        "Member must have value less than or equal to 900",
    )
    assert create_error(Timeout=0)[0] == "ValidationException"
    assert create_error(MemorySize=64)[0] == "ValidationException"
    assert create_error(EphemeralStorage={"Size": 100})[0] == "ValidationException"
    assert create_error(Architectures=["x86_64", "arm64"])[1] == (
        "1 validation error detected: Value '[x86_64, arm64]' at 'architectures' failed to satisfy constraint: "
        "Member must have length less than or equal to 1"
    )
    code_, message, status = create_error(Runtime="PYTHON3.9")
    assert (code_, status) == ("InvalidParameterValueException", 400)
    assert message.startswith("Value PYTHON3.9 at 'runtime' failed to satisfy constraint: Member must satisfy enum")
    assert message.endswith("or be a valid ARN")
    assert create_error(Runtime="python3.7") == (
        "InvalidParameterValueException",
        "The runtime parameter of python3.7 is no longer supported for creating or updating AWS Lambda functions. "
        "We recommend you use a supported runtime while creating or updating functions.",
        400,
    )
    long_name = "a" * 65
    assert create_error(FunctionName=long_name) == (
        "InvalidParameterValueException",
        f"1 validation error detected: Value '{long_name}' at 'functionName' failed to satisfy constraint: "
        "Member must have length less than or equal to 64",
        400,
    )
    assert create_error(FunctionName="invalid:function:name")[0] == "ValidationException"
    big_env = {"A": "x" * 2100, "B": "y" * 2100}
    code_, message, _ = create_error(Environment={"Variables": big_env})
    assert code_ == "InvalidParameterValueException"
    assert message.endswith('String measured: {"A":"' + "x" * 2100 + '","B":"' + "y" * 2100 + '"}')
    assert create_error(Environment={"Variables": {"AWS_REGION": "x"}})[0] == "InvalidParameterValueException"
    assert create_error(Tags={f"k{i}": "v" for i in range(51)}) == (
        "InvalidParameterValueException", "Number of tags exceeds resource tag limit.", 400,
    )
    assert create_error(Code={"ZipFile": b"this is not a zip"}) == (
        "InvalidParameterValueException",
        "Could not unzip uploaded file. Please check your file, then try to upload again.",
        400,
    )
    assert create_error(Code={"S3Bucket": "nope", "S3Key": "k"})[0] == "InvalidParameterValueException"
    missing_role = dict(base)
    del missing_role["Role"]
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=unique(), **missing_role)
    assert error_of(exc)[0:2] == (
        "ValidationException",
        "1 validation error detected: Value null at 'role' failed to satisfy constraint: Member must not be null",
    )


def test_zip_slip_rejected(lam):
    evil = make_zip({"../evil.py": "x = 1\n", "app.py": HELLO})
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(FunctionName=unique(), Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": evil})


def test_duplicate_create_conflicts(lam):
    name, _ = create_function(lam, HELLO)
    with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
        create_function(lam, HELLO, name=name)
    assert error_of(exc) == ("ResourceConflictException", f"Function already exist: {name}", 409)


def test_list_functions_pagination(server):
    # The server is shared: other tests' functions are listed too (and may fill the first default page).
    lam = server.client()
    prefix = unique("page")
    names = sorted(create_function(lam, HELLO, name=f"{prefix}-{i:02d}")[0] for i in range(7))
    listed = []
    marker = None
    while True:
        kwargs = {"MaxItems": 3, **({"Marker": marker} if marker else {})}
        page = lam.list_functions(**kwargs)
        assert len(page["Functions"]) <= 3
        listed += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert [n for n in listed if n.startswith(prefix)] == names
    paginated = [f for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2})
                 for f in page["Functions"]]
    assert [f["FunctionName"] for f in paginated if f["FunctionName"].startswith(prefix)] == names
    entry = next(f for f in paginated if f["FunctionName"] == names[0])
    assert set(entry) == LIST_KEYS
    assert entry["FunctionArn"] == arn(names[0])


def test_update_configuration(lam):
    name, created = create_function(lam, HELLO)
    resp = lam.update_function_configuration(
        FunctionName=name, Description="new", Timeout=30, MemorySize=256, Environment={"Variables": {"AB": "1"}},
        EphemeralStorage={"Size": 1024}, Handler="app.other",
    )
    assert resp["LastUpdateStatus"] == "InProgress"
    assert resp["LastUpdateStatusReason"] == "The function is being created."
    assert resp["LastUpdateStatusReasonCode"] == "Creating"
    assert resp["RevisionId"] != created["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    conf = lam.get_function_configuration(FunctionName=name)
    assert (conf["Description"], conf["Timeout"], conf["MemorySize"], conf["Handler"]) == ("new", 30, 256, "app.other")
    assert conf["Environment"] == {"Variables": {"AB": "1"}}
    assert conf["EphemeralStorage"] == {"Size": 1024}
    assert conf["LastUpdateStatus"] == "Successful"
    assert "LastUpdateStatusReason" not in conf
    with pytest.raises(lam.exceptions.PreconditionFailedException) as exc:
        lam.update_function_configuration(FunctionName=name, Description="x", RevisionId=created["RevisionId"])
    assert error_of(exc) == (
        "PreconditionFailedException",
        "The Revision Id provided does not match the latest Revision Id. "
        "Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
        412,
    )
    ok = lam.update_function_configuration(FunctionName=name, Description="y", RevisionId=conf["RevisionId"])
    assert ok["Description"] == "y"
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=name, Timeout=1000)
    assert error_of(exc)[0] == "ValidationException"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_function_configuration(FunctionName=unique("missing"), Description="x")


def test_logging_config_variants(lam):
    name, _ = create_function(lam, HELLO, LoggingConfig={"LogFormat": "JSON"})
    conf = lam.get_function_configuration(FunctionName=name)["LoggingConfig"]
    assert conf == {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO",
                    "LogGroup": f"/aws/lambda/{name}"}
    back = lam.update_function_configuration(FunctionName=name, LoggingConfig={"LogFormat": "Text"})
    assert back["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}


def test_update_code(lam):
    name, created = create_function(lam, HELLO)
    new_zip = make_zip({"app.py": "def handler(e, c):\n    return 'v2'\n"})
    resp = lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    assert resp["CodeSha256"] == base64.b64encode(hashlib.sha256(new_zip).digest()).decode()
    assert resp["CodeSize"] == len(new_zip)
    assert resp["LastUpdateStatus"] == "InProgress"
    assert resp["RevisionId"] != created["RevisionId"]
    assert lam.invoke(FunctionName=name)["Payload"].read() == b'"v2"'
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_function_code(FunctionName=name, ZipFile=new_zip, RevisionId=created["RevisionId"])
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_code(FunctionName=name, ZipFile=b"garbage")
    dry = lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": HELLO}), DryRun=True)
    assert dry["CodeSha256"] != resp["CodeSha256"]
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == resp["CodeSha256"]


def test_delete_function(lam):
    name, _ = create_function(lam, HELLO)
    assert lam.invoke(FunctionName=name)["StatusCode"] == 200
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")
    assert error_of(exc)[1] == "$LATEST version cannot be deleted without deleting the function."
    assert lam.delete_function(FunctionName=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.delete_function(FunctionName=name)
    assert error_of(exc)[1] == f"Function not found: {arn(name)}"


def test_account_settings(lam):
    before = lam.get_account_settings()
    assert set(before["AccountLimit"]) == {"CodeSizeUnzipped", "CodeSizeZipped", "ConcurrentExecutions",
                                           "TotalCodeSize", "UnreservedConcurrentExecutions"}
    assert set(before["AccountUsage"]) == {"FunctionCount", "TotalCodeSize"}
    assert before["AccountLimit"]["CodeSizeZipped"] == 52428800
    assert before["AccountLimit"]["CodeSizeUnzipped"] == 262144000
    code = make_zip({"app.py": HELLO + "# unique " + unique()})
    name = unique()
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": code})
    after = lam.get_account_settings()["AccountUsage"]
    assert after["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1
    assert after["TotalCodeSize"] == before["AccountUsage"]["TotalCodeSize"] + len(code)
    lam.update_function_configuration(FunctionName=name, Description="changes no code")
    assert lam.get_account_settings()["AccountUsage"]["TotalCodeSize"] == after["TotalCodeSize"]


def test_unknown_operation(server):
    import urllib.error

    req = urllib.request.Request(f"{server.url}/2015-03-31/nothing-here", method="GET")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req)
    assert exc.value.code == 404
    assert exc.value.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    exc.value.close()
