"""EventBridge event patterns: validated once by `compile_pattern`, then matched against events.

A pattern is a JSON object whose structure mirrors the event's. Where the event has an object, the pattern has
an object; where the event has a leaf (string, number, boolean, null, or an array of them), the pattern has an
array of alternatives, each an exact value or a one-key operator object:

    prefix, suffix             string starts / ends with ({"prefix": {"equals-ignore-case": "x"}} also works)
    equals-ignore-case         string equal under Unicode case folding
    wildcard                   `*` stands for any run of characters; `\\*` and `\\\\` escape
    anything-but               a value, a list of strings or numbers, or {"prefix"|"suffix"|"equals-ignore-case"|
                               "wildcard": ...}; matches any present value that is not one of them
    numeric                    [op, n] or [lower-op, n, upper-op, m] with op in < <= = >= >
    exists                     true: the field has a leaf value; false: it has none (missing, or an object)
    cidr                       string is an IP address inside the network (IPv4 or IPv6)

`{"$or": [p1, p2, ...]}` at any object level matches when any of the sub-patterns matches that object (together
with the level's other fields). Every field of a pattern must match (AND); the alternatives of one leaf are OR'd.
An event array matches when any element matches; an object pattern applied to an array of objects must match
within ONE element (as EventBridge keeps array elements consistent).

Decisions where EventBridge leaves room: exact numbers compare by value (300 matches 300.0); `anything-but`
with exact values matches any present leaf not equal to one of them, while its prefix/suffix/wildcard/
equals-ignore-case forms match only strings; the top-level empty pattern `{}` matches every event.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["InvalidPattern", "Pattern", "compile_pattern", "compile_pattern_value"]

Test = Callable[[Any], bool]


class InvalidPattern(ValueError):
    """The pattern is not valid; `message` says why, in EventBridge's words where it has them."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _Leaf:
    """The alternatives for one leaf field: value tests, plus the `exists` conditions."""

    __slots__ = ("if_absent", "if_present", "tests")

    def __init__(self) -> None:
        self.tests: list[Test] = []
        self.if_present = False
        self.if_absent = False

    def matches(self, values: list[Any]) -> bool:
        if not values:
            return self.if_absent
        if self.if_present:
            return True
        return any(test(v) for test in self.tests for v in values)


class _Node:
    """One object level: fields that must all match, and `$or` groups of which one member each must match."""

    __slots__ = ("fields", "ors")

    def __init__(self) -> None:
        self.fields: list[tuple[str, _Node | _Leaf]] = []
        self.ors: list[list[_Node]] = []

    def matches(self, obj: dict[str, Any]) -> bool:
        for key, sub in self.fields:
            value = obj.get(key, _MISSING)
            if isinstance(sub, _Leaf):
                if not sub.matches(_leaf_values(value)):
                    return False
            else:
                objects = _object_values(value)
                if not (any(sub.matches(o) for o in objects) if objects else sub.matches({})):
                    return False
        return all(any(alt.matches(obj) for alt in group) for group in self.ors)


_MISSING = object()


def _leaf_values(value: Any) -> list[Any]:
    if value is _MISSING or isinstance(value, dict):
        return []
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            out.extend(_leaf_values(item))
        return out
    return [value]


def _object_values(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        out: list[dict[str, Any]] = []
        for item in value:
            out.extend(_object_values(item))
        return out
    return []


class Pattern:
    """A compiled pattern. `source` is the decoded JSON it was compiled from."""

    __slots__ = ("_root", "source")

    def __init__(self, source: dict[str, Any], root: _Node):
        self.source = source
        self._root = root

    def matches(self, event: dict[str, Any]) -> bool:
        return isinstance(event, dict) and self._root.matches(event)


def compile_pattern(text: str | bytes) -> Pattern:
    """Parse and validate a pattern's JSON text. Raises `InvalidPattern`."""
    try:
        source = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise InvalidPattern(f"Filter is not valid JSON: {exc}") from None
    return compile_pattern_value(source)


def compile_pattern_value(source: Any) -> Pattern:
    """Validate an already decoded pattern. Raises `InvalidPattern`."""
    if not isinstance(source, dict):
        raise InvalidPattern("Filter is not an object")
    return Pattern(source, _node(source, top=True))


def _node(obj: dict[str, Any], *, top: bool = False) -> _Node:
    if not obj and not top:
        raise InvalidPattern("Empty objects are not allowed")
    node = _Node()
    for key, value in obj.items():
        if key == "$or":
            node.ors.append(_or_group(value))
        elif isinstance(value, dict):
            node.fields.append((key, _node(value)))
        elif isinstance(value, list):
            node.fields.append((key, _leaf(key, value)))
        else:
            raise InvalidPattern(f'"{key}" must be an object or an array')
    return node


def _or_group(value: Any) -> list[_Node]:
    if not isinstance(value, list) or len(value) < 2:
        raise InvalidPattern("$or must be an array of at least two objects")
    if not all(isinstance(item, dict) and item for item in value):
        raise InvalidPattern("Each member of $or must be a non-empty object")
    return [_node(item) for item in value]


def _leaf(key: str, alternatives: list[Any]) -> _Leaf:
    if not alternatives:
        raise InvalidPattern(f'Empty arrays are not allowed (at "{key}")')
    leaf = _Leaf()
    for alt in alternatives:
        if isinstance(alt, dict):
            _operator(leaf, alt)
        elif isinstance(alt, list):
            raise InvalidPattern("Match value must be String, number, true, false, or null")
        else:
            leaf.tests.append(_exact(alt))
    return leaf


def _operator(leaf: _Leaf, alt: dict[str, Any]) -> None:
    if len(alt) != 1:
        raise InvalidPattern("Only one key allowed in match expression" if alt else "Empty objects are not allowed")
    (op, arg), = alt.items()
    if op == "exists":
        if not isinstance(arg, bool):
            raise InvalidPattern("exists match pattern must be either true or false.")
        if arg:
            leaf.if_present = True
        else:
            leaf.if_absent = True
        return
    builder = _BUILDERS.get(op)
    if builder is None:
        raise InvalidPattern(f"Unrecognized match type {op}")
    leaf.tests.append(builder(arg))


# --- value tests --------------------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _exact(expected: Any) -> Test:
    if expected is None:
        return lambda v: v is None
    if isinstance(expected, bool):
        return lambda v: isinstance(v, bool) and v is expected
    if _is_number(expected):
        return lambda v: _is_number(v) and v == expected
    if isinstance(expected, str):
        return lambda v: isinstance(v, str) and v == expected
    raise InvalidPattern("Match value must be String, number, true, false, or null")


def _string_arg(op: str, arg: Any) -> str:
    if not isinstance(arg, str):
        raise InvalidPattern(f"{op} match pattern must be a string")
    return arg


def _fold(s: str) -> str:
    return s.casefold()


def _affix(op: str, arg: Any) -> Test:
    """prefix / suffix, optionally {"equals-ignore-case": s}."""
    ignore_case = False
    if isinstance(arg, dict):
        if list(arg) != ["equals-ignore-case"]:
            raise InvalidPattern(f"Unsupported {op} pattern: only equals-ignore-case may be nested in {op}")
        arg, ignore_case = arg["equals-ignore-case"], True
    text = _string_arg(op, arg)
    if ignore_case:
        text = _fold(text)
        if op == "prefix":
            return lambda v: isinstance(v, str) and _fold(v).startswith(text)
        return lambda v: isinstance(v, str) and _fold(v).endswith(text)
    if op == "prefix":
        return lambda v: isinstance(v, str) and v.startswith(text)
    return lambda v: isinstance(v, str) and v.endswith(text)


def _prefix(arg: Any) -> Test:
    return _affix("prefix", arg)


def _suffix(arg: Any) -> Test:
    return _affix("suffix", arg)


def _ignore_case(arg: Any) -> Test:
    text = _fold(_string_arg("equals-ignore-case", arg))
    return lambda v: isinstance(v, str) and _fold(v) == text


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n or pattern[i + 1] not in "*\\":
                raise InvalidPattern(f"Invalid escape character at pos {i}")
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                raise InvalidPattern(f"Consecutive wildcard characters at pos {i}")
            parts.append(".*")
        else:
            parts.append(re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def _wildcard(arg: Any) -> Test:
    regex = _wildcard_regex(_string_arg("wildcard", arg))
    return lambda v: isinstance(v, str) and regex.fullmatch(v) is not None


_LOWER = {">": float.__gt__, ">=": float.__ge__}
_UPPER = {"<": float.__lt__, "<=": float.__le__}


def _numeric(arg: Any) -> Test:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise InvalidPattern("Value of numeric must be an array of one or two [operator, number] pairs")
    checks: list[tuple[str, float]] = []
    for op, num in zip(arg[::2], arg[1::2]):
        if op not in _LOWER and op not in _UPPER and op != "=":
            raise InvalidPattern(f"Unrecognized numeric range operator: {op}")
        if not _is_number(num) or not math.isfinite(num):
            raise InvalidPattern(f"Value of {op} must be numeric")
        checks.append((op, float(num)))
    if len(checks) == 2:
        lows = [c for c in checks if c[0] in _LOWER]
        highs = [c for c in checks if c[0] in _UPPER]
        if len(lows) != 1 or len(highs) != 1:
            raise InvalidPattern("Bad numeric range: a range needs one lower bound (> or >=) and one upper (< or <=)")
        if lows[0][1] > highs[0][1]:
            raise InvalidPattern("Bad numeric range: the lower bound is above the upper bound")

    def test(v: Any) -> bool:
        if not _is_number(v):
            return False
        x = float(v)
        for op, n in checks:
            if op == "=":
                ok = x == n
            elif op in _LOWER:
                ok = _LOWER[op](x, n)
            else:
                ok = _UPPER[op](x, n)
            if not ok:
                return False
        return True

    return test


def _cidr(arg: Any) -> Test:
    text = _string_arg("cidr", arg)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidPattern(f"Nonstandard IP address: {text}") from None

    def test(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            address = ipaddress.ip_address(v)
        except ValueError:
            return False
        return address.version == network.version and address in network

    return test


def _anything_but(arg: Any) -> Test:
    if isinstance(arg, dict):
        if len(arg) != 1:
            raise InvalidPattern("Only one key allowed in anything-but expression")
        (op, inner), = arg.items()
        if op in ("prefix", "suffix", "wildcard", "equals-ignore-case"):
            values = inner if isinstance(inner, list) and op in ("wildcard", "equals-ignore-case") else [inner]
            if not values:
                raise InvalidPattern(f"Empty arrays are not allowed in anything-but {op}")
            if op in ("prefix", "suffix") and not isinstance(inner, str):
                raise InvalidPattern(f"anything-but {op} match pattern must be a string")
            tests = [_BUILDERS[op](v) for v in values]
            return lambda v: isinstance(v, str) and not any(t(v) for t in tests)
        raise InvalidPattern(f"Unsupported anything-but pattern: {op}")
    values = arg if isinstance(arg, list) else [arg]
    if not values:
        raise InvalidPattern("Empty arrays are not allowed in anything-but")
    for v in values:
        if not (isinstance(v, str) or _is_number(v)):
            raise InvalidPattern("Inside anything-but list, only strings and numbers are supported")
    tests = [_exact(v) for v in values]
    return lambda v: not any(t(v) for t in tests)


_BUILDERS: dict[str, Callable[[Any], Test]] = {
    "prefix": _prefix,
    "suffix": _suffix,
    "equals-ignore-case": _ignore_case,
    "wildcard": _wildcard,
    "numeric": _numeric,
    "cidr": _cidr,
    "anything-but": _anything_but,
}
