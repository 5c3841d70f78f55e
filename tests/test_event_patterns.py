"""The EventBridge pattern matcher (`faas.events.patterns`), operator by operator, and its validation."""

from __future__ import annotations

import json

import pytest

from faas.events.patterns import InvalidPattern, compile_pattern, compile_pattern_value

EVENT = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {
        "instance-id": "i-1234567890abcdef0",
        "state": "terminated",
        "count": 5,
        "ratio": 0.25,
        "flag": True,
        "nothing": None,
        "source-ip": "10.0.0.123",
        "ipv6": "2001:db8::1",
        "file": "photos/2024/cat.png",
        "tags": ["blue", "green"],
        "nested": {"level": {"deep": "value"}},
        "items": [{"name": "a", "qty": 1}, {"name": "b", "qty": 7}],
        "matrix": [[1, 2], [3, 4]],
        "empty": [],
    },
}


def matches(pattern: dict, event: dict = EVENT) -> bool:
    return compile_pattern(json.dumps(pattern)).matches(event)


def detail(**fields) -> dict:
    return {"detail": fields}


def invalid(pattern) -> str:
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    with pytest.raises(InvalidPattern) as exc:
        compile_pattern(text)
    return exc.value.message


# --- exact values ------------------------------------------------------------------------------------------


def test_exact_strings_and_top_level_fields():
    assert matches({"source": ["aws.ec2"]})
    assert matches({"source": ["aws.s3", "aws.ec2"]})
    assert not matches({"source": ["aws.s3"]})
    assert matches({"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]})
    assert not matches({"source": ["aws.ec2"], "detail-type": ["other"]})
    assert not matches({"source": ["AWS.EC2"]})  # case matters


def test_exact_numbers_booleans_and_null():
    assert matches(detail(count=[5]))
    assert matches(detail(count=[5.0]))  # by value
    assert not matches(detail(count=["5"]))  # a string is not the number
    assert matches(detail(ratio=[0.25]))
    assert matches(detail(flag=[True]))
    assert not matches(detail(flag=[False]))
    assert not matches(detail(count=[True]))  # true is not 1
    assert not matches(detail(flag=[1]))
    assert matches(detail(nothing=[None]))
    assert not matches(detail(state=[None]))
    assert not matches(detail(missing=[None]))  # null matches a null value, not a missing field


def test_missing_field_does_not_match():
    assert not matches({"nosuch": ["x"]})
    assert not matches(detail(nosuch=["x"]))


def test_nested_objects():
    assert matches(detail(nested={"level": {"deep": ["value"]}}))
    assert not matches(detail(nested={"level": {"deep": ["other"]}}))
    assert not matches(detail(nested={"level": {"absent": ["value"]}}))
    assert not matches(detail(state={"sub": ["x"]}))  # an object pattern against a leaf


def test_all_fields_must_match():
    assert matches({"source": ["aws.ec2"], "detail": {"state": ["terminated"], "count": [5]}})
    assert not matches({"source": ["aws.ec2"], "detail": {"state": ["terminated"], "count": [6]}})


def test_empty_pattern_matches_everything():
    assert matches({})
    assert compile_pattern("{}").matches({"anything": 1})


# --- arrays in the event -----------------------------------------------------------------------------------


def test_event_arrays_match_when_any_element_matches():
    assert matches({"resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"]})
    assert matches(detail(tags=["green"]))
    assert matches(detail(tags=["red", "blue"]))
    assert not matches(detail(tags=["red"]))
    assert matches(detail(matrix=[4]))  # nested arrays are flattened


def test_arrays_of_objects_match_within_one_element():
    assert matches(detail(items={"name": ["b"]}))
    assert matches(detail(items={"name": ["b"], "qty": [7]}))
    # name "a" and qty 7 exist, but in different elements
    assert not matches(detail(items={"name": ["a"], "qty": [7]}))
    assert matches(detail(items={"qty": [{"numeric": [">", 5]}]}))


def test_empty_event_array_has_no_values():
    assert not matches(detail(empty=[{"exists": True}]))
    assert matches(detail(empty=[{"exists": False}]))
    assert not matches(detail(empty=[{"anything-but": "x"}]))


# --- prefix, suffix, equals-ignore-case, wildcard --------------------------------------------------------


def test_prefix():
    assert matches(detail(file=[{"prefix": "photos/"}]))
    assert not matches(detail(file=[{"prefix": "videos/"}]))
    assert not matches(detail(count=[{"prefix": "5"}]))  # only strings
    assert matches({"time": [{"prefix": "2017-12-22"}]})
    assert matches(detail(file=[{"prefix": ""}]))


def test_prefix_ignoring_case():
    assert matches(detail(file=[{"prefix": {"equals-ignore-case": "PHOTOS/"}}]))
    assert not matches(detail(file=[{"prefix": {"equals-ignore-case": "VIDEOS/"}}]))


def test_suffix():
    assert matches(detail(file=[{"suffix": ".png"}]))
    assert not matches(detail(file=[{"suffix": ".jpg"}]))
    assert matches(detail(file=[{"suffix": {"equals-ignore-case": ".PNG"}}]))
    assert matches(detail(file=[{"suffix": ".jpg"}, {"suffix": ".png"}]))  # alternatives are OR'd


def test_equals_ignore_case():
    assert matches(detail(state=[{"equals-ignore-case": "TERMINATED"}]))
    assert matches(detail(state=[{"equals-ignore-case": "Terminated"}]))
    assert not matches(detail(state=[{"equals-ignore-case": "terminate"}]))
    assert not matches(detail(count=[{"equals-ignore-case": "5"}]))


def test_wildcard():
    assert matches(detail(file=[{"wildcard": "photos/*.png"}]))
    assert matches(detail(file=[{"wildcard": "*cat*"}]))
    assert matches(detail(file=[{"wildcard": "photos/2024/cat.png"}]))
    assert not matches(detail(file=[{"wildcard": "photos/*.jpg"}]))
    assert not matches(detail(file=[{"wildcard": "photos"}]))  # the whole value must match
    star = {"detail": {"s": "a*b"}}
    assert matches(detail(s=[{"wildcard": "a\\*b"}]), star)
    assert not matches(detail(s=[{"wildcard": "a\\*b"}]), {"detail": {"s": "axb"}})
    assert matches(detail(s=[{"wildcard": "a.b"}]), {"detail": {"s": "a.b"}})  # no regex meaning
    assert not matches(detail(s=[{"wildcard": "a.b"}]), {"detail": {"s": "axb"}})


# --- anything-but -------------------------------------------------------------------------------------------


def test_anything_but_single_value():
    assert matches(detail(state=[{"anything-but": "running"}]))
    assert not matches(detail(state=[{"anything-but": "terminated"}]))
    assert matches(detail(count=[{"anything-but": 4}]))
    assert not matches(detail(count=[{"anything-but": 5}]))
    assert not matches(detail(missing=[{"anything-but": "x"}]))  # needs a value


def test_anything_but_list():
    assert matches(detail(state=[{"anything-but": ["running", "pending"]}]))
    assert not matches(detail(state=[{"anything-but": ["running", "terminated"]}]))
    assert not matches(detail(count=[{"anything-but": [4, 5, 6]}]))
    assert matches(detail(count=[{"anything-but": [4, 6]}]))


def test_anything_but_prefix_and_suffix():
    assert matches(detail(file=[{"anything-but": {"prefix": "videos/"}}]))
    assert not matches(detail(file=[{"anything-but": {"prefix": "photos/"}}]))
    assert matches(detail(file=[{"anything-but": {"suffix": ".jpg"}}]))
    assert not matches(detail(file=[{"anything-but": {"suffix": ".png"}}]))


def test_anything_but_ignore_case_and_wildcard():
    assert not matches(detail(state=[{"anything-but": {"equals-ignore-case": "TERMINATED"}}]))
    assert not matches(detail(state=[{"anything-but": {"equals-ignore-case": ["x", "Terminated"]}}]))
    assert matches(detail(state=[{"anything-but": {"equals-ignore-case": ["x", "y"]}}]))
    assert not matches(detail(file=[{"anything-but": {"wildcard": "*.png"}}]))
    assert matches(detail(file=[{"anything-but": {"wildcard": ["*.jpg", "videos/*"]}}]))


def test_anything_but_on_arrays():
    assert matches(detail(tags=[{"anything-but": "blue"}]))  # "green" is not excluded
    assert not matches(detail(tags=[{"anything-but": ["blue", "green"]}]))


# --- numeric --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("condition, expected", [
    ([">", 4], True), ([">", 5], False), ([">=", 5], True), (["<", 5], False), (["<=", 5], True),
    (["=", 5], True), (["=", 5.0], True), (["=", 6], False), (["<", 5.5], True),
    ([">", 0, "<", 10], True), ([">", 5, "<", 10], False), ([">=", 5, "<=", 5], True),
    ([">", 0, "<=", 5], True), ([">", 0, "<", 5], False), (["<", 10, ">", 1], True),
    ([">", -10, "<", -1], False),
])
def test_numeric(condition, expected):
    assert matches(detail(count=[{"numeric": condition}])) is expected


def test_numeric_only_matches_numbers():
    assert matches(detail(ratio=[{"numeric": [">", 0, "<", 1]}]))
    assert not matches(detail(state=[{"numeric": [">", 0]}]))
    assert not matches(detail(flag=[{"numeric": [">", 0]}]))  # true is not a number
    assert not matches(detail(missing=[{"numeric": [">", 0]}]))


# --- exists ------------------------------------------------------------------------------------------------


def test_exists():
    assert matches(detail(state=[{"exists": True}]))
    assert not matches(detail(state=[{"exists": False}]))
    assert matches(detail(missing=[{"exists": False}]))
    assert not matches(detail(missing=[{"exists": True}]))
    assert matches(detail(nothing=[{"exists": True}]))  # a null value exists
    assert matches({"nosuch": {"deeper": [{"exists": False}]}})  # missing parents too


def test_exists_applies_to_leaves_only():
    assert not matches(detail(nested=[{"exists": True}]))
    assert matches(detail(nested=[{"exists": False}]))
    assert matches(detail(nested={"level": {"deep": [{"exists": True}]}}))


def test_exists_false_or_a_value():
    pattern = detail(color=[{"exists": False}, "red"])
    assert matches(pattern)
    assert matches(pattern, {"detail": {"color": "red"}})
    assert not matches(pattern, {"detail": {"color": "blue"}})


# --- cidr ---------------------------------------------------------------------------------------------------


def test_cidr_ipv4():
    assert matches(detail(**{"source-ip": [{"cidr": "10.0.0.0/24"}]}))
    assert matches(detail(**{"source-ip": [{"cidr": "10.0.0.0/8"}]}))
    assert not matches(detail(**{"source-ip": [{"cidr": "10.0.1.0/24"}]}))
    assert matches(detail(**{"source-ip": [{"cidr": "10.0.0.123/32"}]}))
    assert not matches(detail(state=[{"cidr": "10.0.0.0/8"}]))  # not an address


def test_cidr_ipv6():
    assert matches(detail(ipv6=[{"cidr": "2001:db8::/32"}]))
    assert not matches(detail(ipv6=[{"cidr": "2001:db9::/32"}]))
    assert not matches(detail(**{"source-ip": [{"cidr": "2001:db8::/32"}]}))


# --- $or ----------------------------------------------------------------------------------------------------


def test_or_at_top_level():
    pattern = {"$or": [{"source": ["aws.s3"]}, {"detail": {"state": ["terminated"]}}]}
    assert matches(pattern)
    assert not matches({"$or": [{"source": ["aws.s3"]}, {"detail": {"state": ["running"]}}]})


def test_or_with_sibling_fields_and_nested():
    pattern = {"source": ["aws.ec2"], "detail": {"$or": [{"count": [{"numeric": [">", 100]}]},
                                                         {"state": [{"prefix": "term"}]}]}}
    assert matches(pattern)
    assert not matches({**pattern, "source": ["aws.s3"]})
    nested_or = {"detail": {"$or": [
        {"state": ["running"]},
        {"$or": [{"count": [1]}, {"flag": [True]}]},
    ]}}
    assert matches(nested_or)


def test_or_with_exists_false():
    pattern = {"$or": [{"detail": {"missing": [{"exists": True}]}}, {"detail": {"missing": [{"exists": False}]}}]}
    assert matches(pattern)


# --- validation ---------------------------------------------------------------------------------------------


def test_invalid_json_and_shape():
    assert "JSON" in invalid("{not json")
    assert invalid("[1, 2]") == "Filter is not an object"
    assert invalid('"text"') == "Filter is not an object"
    assert invalid({"source": "aws.ec2"}) == '"source" must be an object or an array'
    assert invalid({"source": 5}) == '"source" must be an object or an array'
    assert "Empty arrays" in invalid({"source": []})
    assert "Empty objects" in invalid({"detail": {}})
    assert "Match value" in invalid({"source": [["nested"]]})


def test_invalid_operators():
    assert invalid({"a": [{"nosuch": 1}]}) == "Unrecognized match type nosuch"
    assert "Only one key" in invalid({"a": [{"prefix": "x", "suffix": "y"}]})
    assert "must be a string" in invalid({"a": [{"prefix": 5}]})
    assert "must be a string" in invalid({"a": [{"suffix": None}]})
    assert "must be a string" in invalid({"a": [{"equals-ignore-case": 1}]})
    assert "nested" in invalid({"a": [{"prefix": {"suffix": "x"}}]})
    assert "true or false" in invalid({"a": [{"exists": "yes"}]})
    assert "Consecutive wildcard" in invalid({"a": [{"wildcard": "a**b"}]})
    assert "Nonstandard IP address" in invalid({"a": [{"cidr": "10.0.0.0/99"}]})
    assert "Nonstandard IP address" in invalid({"a": [{"cidr": "not-an-ip"}]})


def test_invalid_numeric():
    for bad in ([">"], [">", "5"], ["~", 5], [">", 1, ">", 2], ["<", 1, "<", 2], [">", 5, "<", 1],
                ["=", 1, "<", 2], [">", 1, "<", 2, "=", 3], 5, [">", True]):
        invalid({"a": [{"numeric": bad}]})


def test_invalid_anything_but():
    invalid({"a": [{"anything-but": [None]}]})
    invalid({"a": [{"anything-but": [True]}]})
    invalid({"a": [{"anything-but": {"numeric": [">", 1]}}]})
    invalid({"a": [{"anything-but": {"prefix": 5}}]})
    invalid({"a": [{"anything-but": []}]})


def test_invalid_or():
    assert "$or" in invalid({"$or": [{"a": ["x"]}]})
    assert "$or" in invalid({"$or": {"a": ["x"]}})
    invalid({"$or": [{"a": ["x"]}, "b"]})
    invalid({"$or": [{"a": ["x"]}, {}]})


def test_compile_pattern_value_and_source():
    compiled = compile_pattern_value({"source": ["aws.ec2"]})
    assert compiled.source == {"source": ["aws.ec2"]}
    assert compiled.matches(EVENT)
    assert not compiled.matches("not an event")  # type: ignore[arg-type]
    with pytest.raises(InvalidPattern):
        compile_pattern_value(["x"])
