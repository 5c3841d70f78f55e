"""Request validation against botocore's Lambda model, compared with messages recorded from real AWS."""

from __future__ import annotations

import time

import pytest
from botocore.loaders import Loader
from botocore.model import ServiceModel, ShapeResolver

from faas.api.validation import compile_java_regex, format_errors, java_double, validate
from faas.errors import SerializationException, ValidationException

ROLE = "arn:aws:iam::123456789012:role/lambda-role"
ROLE_PATTERN = r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"


@pytest.fixture(scope="module")
def model() -> ServiceModel:
    return ServiceModel(Loader().load_service_model("lambda", "service-2"), service_name="lambda")


def shape(model: ServiceModel, operation: str):
    return model.operation_model(operation).input_shape


def create_function(**extra):
    params = {
        "FunctionName": "my-function",
        "Role": ROLE,
        "Code": {"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
        "Runtime": "python3.12",
        "Handler": "app.handler",
    }
    params.update(extra)
    return params


def one(errors: list[str]) -> str:
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_full_create_function(model):
    params = create_function(
        Description="a function",
        Timeout=30,
        MemorySize=512,
        Publish=True,
        VpcConfig={"SubnetIds": ["subnet-0123"], "SecurityGroupIds": ["sg-0123"]},
        PackageType="Zip",
        DeadLetterConfig={"TargetArn": "arn:aws:sqs:us-east-1:123456789012:dlq"},
        Environment={"Variables": {"STAGE": "prod", "A1_b": ""}},
        TracingConfig={"Mode": "Active"},
        Tags={"team": "core"},
        Layers=["arn:aws:lambda:us-east-1:123456789012:layer:shared:3"],
        FileSystemConfigs=[
            {
                "Arn": "arn:aws:elasticfilesystem:us-east-1:123456789012:access-point/fsap-0123456789abcdef0",
                "LocalMountPath": "/mnt/data",
            }
        ],
        Architectures=["arm64"],
        EphemeralStorage={"Size": 1024},
        SnapStart={"ApplyOn": "PublishedVersions"},
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "LogGroup": "/aws/lambda/x"},
    )
    assert validate(shape(model, "CreateFunction"), params) == []


@pytest.mark.parametrize(
    "value, rule",
    [
        (100, "Member must have value greater than or equal to 128"),
        (40000, "Member must have value less than or equal to 32768"),
    ],
)
def test_memory_size(model, value, rule):
    errors = validate(shape(model, "CreateFunction"), create_function(MemorySize=value))
    assert one(errors) == f"Value '{value}' at 'memorySize' failed to satisfy constraint: {rule}"


def test_timeout_zero(model):
    errors = validate(shape(model, "CreateFunction"), create_function(Timeout=0))
    assert one(errors) == (
        "Value '0' at 'timeout' failed to satisfy constraint: Member must have value greater than or equal to 1"
    )


def test_description_too_long(model):
    text = "d" * 257
    errors = validate(shape(model, "CreateFunction"), create_function(Description=text))
    assert one(errors) == (
        f"Value '{text}' at 'description' failed to satisfy constraint: "
        "Member must have length less than or equal to 256"
    )


def test_role_pattern(model):
    errors = validate(shape(model, "CreateFunction"), create_function(Role="r1"))
    assert one(errors) == (
        "Value 'r1' at 'role' failed to satisfy constraint: Member must satisfy regular expression pattern: "
        r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
    )


def test_missing_role(model):
    params = create_function()
    del params["Role"]
    errors = validate(shape(model, "CreateFunction"), params)
    assert one(errors) == "Value null at 'role' failed to satisfy constraint: Member must not be null"
    params["Role"] = None
    assert validate(shape(model, "CreateFunction"), params) == errors


def test_everything_missing_in_member_order(model):
    assert validate(shape(model, "CreateFunction"), {}) == [
        f"Value null at '{m}' failed to satisfy constraint: Member must not be null"
        for m in ("functionName", "role", "code")
    ]


def test_architectures_enum(model):
    errors = validate(shape(model, "CreateFunction"), create_function(Architectures=["X86_64"]))
    assert one(errors) == (
        "Value '[X86_64]' at 'architectures' failed to satisfy constraint: Member must satisfy constraint: "
        "[Member must satisfy enum value set: [x86_64, arm64], Member must not be null]"
    )


def test_architectures_too_many(model):
    errors = validate(shape(model, "CreateFunction"), create_function(Architectures=["x86_64", "arm64"]))
    assert one(errors) == (
        "Value '[x86_64, arm64]' at 'architectures' failed to satisfy constraint: "
        "Member must have length less than or equal to 1"
    )


def test_alias_weight_value(model):
    params = {
        "FunctionName": "f",
        "Name": "live",
        "FunctionVersion": "1",
        "RoutingConfig": {"AdditionalVersionWeights": {"2": 2}},
    }
    errors = validate(shape(model, "CreateAlias"), params)
    assert one(errors) == (
        "Value '{2=2.0}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: "
        "Map value must satisfy constraint: [Member must have value less than or equal to 1.0, "
        "Member must have value greater than or equal to 0.0, Member must not be null]"
    )


def test_alias_weight_key(model):
    params = {
        "FunctionName": "f",
        "Name": "live",
        "FunctionVersion": "1",
        "RoutingConfig": {"AdditionalVersionWeights": {"$LATEST": 0.5}},
    }
    errors = validate(shape(model, "CreateAlias"), params)
    assert one(errors) == (
        "Value '{$LATEST=0.5}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: "
        "Map keys must satisfy constraint: [Member must have length less than or equal to 1024, "
        "Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: [0-9]+]"
    )


@pytest.mark.parametrize(
    "size, rule",
    [
        (20000, "Member must have value less than or equal to 10240"),
        (100, "Member must have value greater than or equal to 512"),
    ],
)
def test_ephemeral_storage(model, size, rule):
    errors = validate(shape(model, "CreateFunction"), create_function(EphemeralStorage={"Size": size}))
    assert one(errors) == f"Value '{size}' at 'ephemeralStorage.size' failed to satisfy constraint: {rule}"


def test_required_member_of_nested_structure(model):
    errors = validate(shape(model, "CreateFunction"), create_function(EphemeralStorage={}))
    assert one(errors) == "Value null at 'ephemeralStorage.size' failed to satisfy constraint: Member must not be null"


def test_nested_enum(model):
    errors = validate(shape(model, "CreateFunction"), create_function(SnapStart={"ApplyOn": "Always"}))
    assert one(errors) == (
        "Value 'Always' at 'snapStart.applyOn' failed to satisfy constraint: "
        "Member must satisfy enum value set: [PublishedVersions, None]"
    )


def test_structure_in_list_path(model):
    params = create_function(FileSystemConfigs=[{"Arn": "arn:aws:elasticfilesystem:us-east-1:123456789012:"
                                                        "access-point/fsap-0123456789abcdef0",
                                                 "LocalMountPath": "/tmp/x"}])
    errors = validate(shape(model, "CreateFunction"), params)
    assert one(errors) == (
        "Value '/tmp/x' at 'fileSystemConfigs.1.member.localMountPath' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: /mnt/[a-zA-Z0-9-_.]+"
    )


def test_sensitive_value_is_not_echoed(model):
    params = create_function(Environment={"Variables": {"1BAD": "secret"}})
    errors = validate(shape(model, "CreateFunction"), params)
    assert one(errors) == (
        "Value at 'environment.variables' failed to satisfy constraint: "
        "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]"
    )


def test_function_name_pattern(model):
    errors = validate(shape(model, "GetFunction"), {"FunctionName": "my!function"})
    assert one(errors) == (
        "Value 'my!function' at 'functionName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: "
        r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?"
        r"([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
    )


def test_function_name_accepts_names_and_arns(model):
    get = shape(model, "GetFunction")
    for name in ("f", "my-function", "123456789012:function:f", "arn:aws:lambda:us-east-1:123456789012:function:f:1",
                 "arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST"):
        assert validate(get, {"FunctionName": name}) == [], name


def test_several_rules_of_one_value(model):
    errors = validate(shape(model, "GetFunction"), {"FunctionName": ""})
    assert errors == [
        "Value '' at 'functionName' failed to satisfy constraint: Member must have length greater than or equal to 1",
        "Value '' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: "
        r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?"
        r"([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?",
    ]


def test_list_element_rules_without_not_null():
    """The recorded `vpcConfig.subnetIds` message, with the element constraints the live service has."""
    shapes = {
        "Input": {"type": "structure", "members": {"VpcConfig": {"shape": "VpcConfig"}}},
        "VpcConfig": {"type": "structure", "members": {"SubnetIds": {"shape": "SubnetIds"}}},
        "SubnetIds": {"type": "list", "member": {"shape": "SubnetId"}, "max": 16, "min": 0},
        "SubnetId": {"type": "string", "max": 1024, "min": 0, "pattern": "subnet-[0-9a-z]*"},
    }
    input_shape = ShapeResolver(shapes).get_shape_by_name("Input")
    errors = validate(input_shape, {"VpcConfig": {"SubnetIds": ["subnet-bad!"]}})
    assert one(errors) == (
        "Value '[subnet-bad!]' at 'vpcConfig.subnetIds' failed to satisfy constraint: Member must satisfy constraint: "
        "[Member must have length less than or equal to 1024, Member must have length greater than or equal to 0, "
        "Member must satisfy regular expression pattern: subnet-[0-9a-z]*]"
    )
    assert validate(input_shape, {"VpcConfig": {"SubnetIds": ["subnet-0abc"]}}) == []


def test_cors_allow_methods(model):
    params = {"FunctionName": "f", "AuthType": "NONE", "Cors": {"AllowMethods": ["GET", "OPTIONS"]}}
    errors = validate(shape(model, "CreateFunctionUrlConfig"), params)
    assert one(errors) == (
        "Value '[GET, OPTIONS]' at 'cors.allowMethods' failed to satisfy constraint: Member must satisfy constraint: "
        "[Member must have length less than or equal to 6, Member must have length greater than or equal to 0, "
        "Member must satisfy regular expression pattern: .*, Member must not be null]"
    )


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ({"MemorySize": "128"}, "STRING_VALUE can not be converted to an Integer"),
        ({"MemorySize": True}, "can not be converted to an Integer"),
        ({"MemorySize": 2**40}, "out of range of int"),
        ({"Role": {"a": 1}}, "Start of structure or map found where not expected"),
        ({"Environment": ["A=1"]}, "Start of list found where not expected"),
        ({"Environment": {"Variables": {"A": 1}}}, "can not be converted to a String"),
        ({"Architectures": "arm64"}, "can not be converted to a List"),
        ({"Publish": "true"}, "can not be converted to a Boolean"),
        ({"FileSystemConfigs": ["x"]}, "can not be converted to a Structure"),
    ],
)
def test_wrong_types_are_serialization_errors(model, extra, fragment):
    with pytest.raises(SerializationException) as exc:
        validate(shape(model, "CreateFunction"), create_function(**extra))
    assert fragment in exc.value.message
    field = next(iter(extra))
    assert f"'{field[0].lower()}{field[1:]}" in exc.value.message


def test_format_errors():
    err = format_errors(["a"])
    assert isinstance(err, ValidationException)
    assert err.message == "1 validation error detected: a"
    assert format_errors(["a", "b"]).message == "2 validation errors detected: a; b"


def test_java_double():
    assert [java_double(x) for x in (2, 1.0, 0.5, -1, 0.0, 1e7, 1e-5, 123456.25)] == [
        "2.0", "1.0", "0.5", "-1.0", "0.0", "1.0E7", "1.0E-5", "123456.25"
    ]


@pytest.mark.parametrize(
    "pattern, text, matches",
    [
        (r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$", "héllo wörld 42", True),
        (r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$", "a#b", False),
        (r"\p{Alpha}+", "abc", True),
        (r"\P{Digit}+", "abc", True),
        (r"[\w-.]+", "a-.b", True),
        (r"\Qa.b\E", "axb", False),
        (r"[a[0-9]]+", "a1", True),
        (r".*", "a\rb", False),
        (r"\d+", "\u0661", False),
        (r"[0-9]+", "12\n", False),
    ],
)
def test_java_regex_translation(pattern, text, matches):
    rx = compile_java_regex(pattern)
    assert rx is not None
    assert bool(rx.fullmatch(text)) is matches


def test_every_model_pattern_translates(model):
    shapes = Loader().load_service_model("lambda", "service-2")["shapes"]
    for name, definition in shapes.items():
        if "pattern" in definition:
            assert compile_java_regex(definition["pattern"]) is not None, name


def test_invoke_is_cheap(model):
    invoke = shape(model, "Invoke")
    params = {"FunctionName": "my-function", "InvocationType": "RequestResponse", "Payload": b"{}",
              "Qualifier": "$LATEST"}
    assert validate(invoke, params) == []
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        validate(invoke, params)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 100e-6, per_call
