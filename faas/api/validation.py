"""Request validation against botocore's Lambda service model, with AWS's own error strings.

`validate(shape, params)` checks a decoded operation input (member names as keys, blobs as bytes, numbers as
numbers) against the model's constraints and returns the messages AWS's front end would send, in member order:

    Value '<value>' at '<path>' failed to satisfy constraint: <rule>

How AWS words things, and how this module reproduces it:

* ``<path>`` is the member name with its first letter lower-cased (``KMSKeyArn`` -> ``kMSKeyArn``), nested
  with dots. A structure inside a list sits at ``<list>.<n>.member`` (n counts from 1), a structure inside a
  map at ``<map>.<key>.member``.
* ``<value>`` is printed the way Java's ``toString`` would: strings bare, ``null`` without quotes, doubles as
  ``2.0``/``1.0E-5``, booleans ``true``/``false``, lists ``[a, b]``, maps ``{k=v, k2=v2}``. Members marked
  ``sensitive`` in the model never show their value: ``Value at 'environment.variables' failed ...``
  (a missing one still reads ``Value null at ...``).
* One scalar breaking several rules gives one message per rule, in the order enum, max, min, pattern.
* A list whose elements break the element shape's rules gives ONE message at the list's path, with the whole
  list as the value and every rule of the element shape:
  ``Member must satisfy constraint: [<max>, <min>, <pattern>, <enum>, Member must not be null]``.
  A map gives at most one ``Map keys must satisfy constraint: [...]`` and one
  ``Map value must satisfy constraint: [...]`` message.

  Whether AWS appends ``Member must not be null`` comes from a trait of AWS's internal model that botocore does
  not carry, so it is approximated from the recordings available (see `_list_member_not_null` and
  `_map_value_not_null`): always for list elements (``architectures``, ``cors.allowMethods``, ``layers``)
  except the VPC id lists (``vpcConfig.subnetIds`` was recorded without it); for map values only when the
  value is not a string/list/map with length bounds (``routingConfig.additionalVersionWeights`` has it,
  DynamoDB's ``requestItems`` and CloudWatch tag values do not); never for map keys.

* Patterns are Java regular expressions that must match the whole value; they are translated to Python's
  `re` (``\\p{...}`` classes, ``\\Q..\\E``, ``\\z``, nested character-class unions, ASCII ``\\d``/``\\w``/``\\s``,
  ``.`` not matching any line terminator) and compiled once. A pattern that cannot be translated is logged
  and not enforced rather than rejecting requests.
* String lengths count UTF-16 code units, as Java's ``String.length()`` does.

A value of the wrong JSON type (a string for an integer, a list for a structure, ...) is not a validation error:
AWS fails to deserialize the request. `validate` raises `faas.errors.SerializationException` then, with
Coral's wording followed by the offending field, e.g.
``STRING_VALUE can not be converted to an Integer (at 'memorySize')``,
``Start of structure or map found where not expected. (at 'role')``,
``Start of list found where not expected (at 'environment')``,
``Numeric value (3000000000) out of range of int (at 'timeout')``.

Every shape is compiled once into a small tree of validators (cached per shape object and per model), so the
happy path costs a dict lookup plus one type check and a few comparisons per member present.
"""

from __future__ import annotations

import datetime
import logging
import math
import re
import threading
import unicodedata
import warnings
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from botocore.model import Shape

from faas.errors import SerializationException, ValidationException, validation_message

__all__ = ["validate", "format_errors", "raise_for_errors", "java_regex", "compile_java_regex"]

log = logging.getLogger(__name__)

NOT_NULL = "Member must not be null"

# Element shapes whose lists AWS was recorded reporting without "Member must not be null".
_NULLABLE_LIST_MEMBERS = frozenset({"SubnetId", "SecurityGroupId"})

_INT_RANGES = {"integer": (-(2**31), 2**31 - 1, "int"), "long": (-(2**63), 2**63 - 1, "long")}
_EMPTY: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------- public API


def validate(shape: Shape, params: dict[str, Any]) -> list[str]:
    """Validate an operation input against its input `shape`; return AWS's messages ([] when valid).

    Raises `SerializationException` when a value has the wrong JSON type for its shape."""
    node = _TOP.get(shape)
    if node is None:
        node = _node_for(shape)
    errors: list[str] = []
    if params is None:
        params = {}
    node.check(params, "", errors)
    return errors


def format_errors(errors: list[str]) -> ValidationException:
    """The ValidationException AWS sends for these messages: ``"2 validation errors detected: a; b"``."""
    return ValidationException(validation_message(errors))


def raise_for_errors(shape: Shape, params: dict[str, Any]) -> None:
    """`validate`, raising the ValidationException when anything fails."""
    errors = validate(shape, params)
    if errors:
        raise format_errors(errors)


# --------------------------------------------------------------------------------------------- formatting


def java_double(x: float) -> str:
    """`Double.toString` of `x`: ``2.0``, ``0.5``, ``1.0E7``, ``1.0E-5``."""
    x = float(x)
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    a = abs(x)
    if 1e-3 <= a < 1e7:
        s = repr(x)
        return s if ("." in s or "e" in s) else s + ".0"
    _, digits, exp = Decimal(repr(a)).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    exponent = int(exp) + len(digits) - 1
    out = f"{ds[0]}.{ds[1:] or '0'}E{exponent}"
    return "-" + out if x < 0 else out


def _jlen(s: str) -> int:
    """Java's String.length(): UTF-16 code units."""
    n = len(s)
    if not s.isascii():
        n += sum(1 for ch in s if ord(ch) > 0xFFFF)
    return n


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _token(v: Any) -> str:
    """The JSON token kind of a value, as Coral names it in deserialization errors."""
    if v is True:
        return "TRUE_VALUE"
    if v is False:
        return "FALSE_VALUE"
    if isinstance(v, str):
        return "STRING_VALUE"
    if isinstance(v, (int, float)):
        return "NUMBER_VALUE"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "BLOB_VALUE"
    return type(v).__name__.upper() + "_VALUE"


def _wrong_type(v: Any, path: str, target: str) -> SerializationException:
    if isinstance(v, dict):
        text = "Start of structure or map found where not expected."
    elif isinstance(v, (list, tuple)):
        text = "Start of list found where not expected"
    else:
        text = f"{_token(v)} can not be converted to {target}"
    return SerializationException(f"{text} (at '{path}')")


# --------------------------------------------------------------------------------------------- nodes


class _Node:
    """Validator of one shape. `direct` checks the shape's own rules (after its type), `nested` recurses."""

    __slots__ = (
        "name", "kind", "hide", "rules", "direct", "nested", "fmt",
        "members", "member", "key", "value", "element_rule", "key_rule", "value_rule",
    )

    def __init__(self, shape: Shape) -> None:
        self.name = shape.name
        self.kind = shape.type_name
        self.hide = bool(shape.metadata.get("sensitive"))
        self.rules: list[str] = []  # this shape's rule texts: max, min, pattern, enum
        self.direct: Callable[[Any, str], tuple[str, ...] | list[str]] = _no_rules
        self.nested: Callable[[Any, str, list[str]], None] | None = None
        self.fmt: Callable[[Any], str] = _fmt_plain
        self.members: tuple[tuple[str, str, _Node, bool], ...] = ()
        self.member: _Node | None = None
        self.key: _Node | None = None
        self.value: _Node | None = None
        self.element_rule = self.key_rule = self.value_rule = ""

    def message(self, v: Any, path: str, rule: str) -> str:
        if v is None:
            return f"Value null at '{path}' failed to satisfy constraint: {rule}"
        if self.hide:
            return f"Value at '{path}' failed to satisfy constraint: {rule}"
        return f"Value '{self.fmt(v)}' at '{path}' failed to satisfy constraint: {rule}"

    def check(self, v: Any, path: str, errors: list[str]) -> None:
        for rule in self.direct(v, path):
            errors.append(self.message(v, path, rule))
        if self.nested is not None:
            self.nested(v, path, errors)


def _no_rules(v: Any, path: str) -> tuple[str, ...]:
    return _EMPTY


def _fmt_plain(v: Any) -> str:
    return _fmt_any(v)


def _fmt_any(v: Any) -> str:
    """Java-style rendering of a value whose shape is unknown."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return java_double(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        n = len(v)
        return f"java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_any(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_fmt_any(k)}={_fmt_any(e)}" for k, e in v.items()) + "}"
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    return str(v)


# --------------------------------------------------------------------------------------------- compiling

_TOP: dict[Shape, _Node] = {}
_NODES: dict[tuple, tuple[Any, _Node]] = {}
_lock = threading.RLock()


def _node_for(shape: Shape) -> _Node:
    with _lock:
        node = _TOP.get(shape)
        if node is None:
            node = _compile(shape)
            if len(_TOP) > 4096:  # callers building fresh Shape objects per request: do not grow forever
                _TOP.clear()
            _TOP[shape] = node
        return node


def _compile(shape: Shape) -> _Node:
    md = shape.metadata
    enum = md.get("enum")
    key = (
        id(shape._shape_resolver),
        shape.name,
        shape.type_name,
        md.get("min"),
        md.get("max"),
        md.get("pattern"),
        tuple(enum) if enum else None,
        bool(md.get("sensitive")),
        tuple(md.get("required") or ()),
    )
    hit = _NODES.get(key)
    if hit is not None:
        return hit[1]
    node = _Node(shape)
    # Registered before recursing, so recursive shapes terminate; the resolver is kept alive so its id
    # cannot be reused by another model.
    _NODES[key] = (shape._shape_resolver, node)
    builder = _BUILDERS.get(shape.type_name, _build_other)
    builder(node, shape)
    return node


def _bound_rules(node: _Node, md: dict, length: bool, as_float: bool) -> tuple[Any, Any]:
    word = "length" if length else "value"
    show = java_double if as_float else str
    mx, mn = md.get("max"), md.get("min")
    if mx is not None:
        node.rules.append(f"Member must have {word} less than or equal to {show(mx)}")
    if mn is not None:
        node.rules.append(f"Member must have {word} greater than or equal to {show(mn)}")
    return mx, mn


def _build_string(node: _Node, shape: Shape) -> None:
    md = shape.metadata
    mx, mn = _bound_rules(node, md, True, False)
    pattern = md.get("pattern")
    rx = None
    if pattern is not None:
        node.rules.append(f"Member must satisfy regular expression pattern: {pattern}")
        rx = compile_java_regex(pattern)
    enum = md.get("enum")
    enum_set = frozenset(enum) if enum else None
    if enum:
        node.rules.append(f"Member must satisfy enum value set: [{', '.join(enum)}]")
    r_enum = f"Member must satisfy enum value set: [{', '.join(enum)}]" if enum else ""
    r_max = f"Member must have length less than or equal to {mx}"
    r_min = f"Member must have length greater than or equal to {mn}"
    r_pat = f"Member must satisfy regular expression pattern: {pattern}"
    match = rx.fullmatch if rx is not None else None
    has_len = mx is not None or mn is not None

    if enum_set is None and not has_len and match is None:
        def direct(v: Any, path: str) -> tuple[str, ...]:
            if type(v) is not str and not isinstance(v, str):
                raise _wrong_type(v, path, "a String")
            return _EMPTY
    else:
        def direct(v: Any, path: str) -> tuple[str, ...] | list[str]:
            if type(v) is not str and not isinstance(v, str):
                raise _wrong_type(v, path, "a String")
            out: list[str] | None = None
            if enum_set is not None and v not in enum_set:
                out = [r_enum]
            if has_len:
                n = len(v) if v.isascii() else _jlen(v)
                if mx is not None and n > mx:
                    out = (out or []) + [r_max]
                if mn is not None and n < mn:
                    out = (out or []) + [r_min]
            if match is not None and match(v) is None:
                out = (out or []) + [r_pat]
            return out or _EMPTY

    node.direct = direct
    node.fmt = str


def _build_number(node: _Node, shape: Shape) -> None:
    md = shape.metadata
    kind = shape.type_name
    is_float = kind in ("double", "float")
    mx, mn = _bound_rules(node, md, False, is_float)
    r_max = r_min = ""
    if mx is not None:
        r_max = node.rules[0]
    if mn is not None:
        r_min = node.rules[-1]
    if is_float:
        target = "a Double" if kind == "double" else "a Float"

        def direct(v: Any, path: str) -> tuple[str, ...] | list[str]:
            if v is True or v is False or not isinstance(v, (int, float)):
                raise _wrong_type(v, path, target)
            try:
                f = float(v)
            except OverflowError:
                raise SerializationException(f"Numeric value ({v}) out of range of double (at '{path}')") from None
            out: list[str] | None = None
            if mx is not None and f > mx:
                out = [r_max]
            if mn is not None and f < mn:
                out = (out or []) + [r_min]
            return out or _EMPTY

        node.fmt = lambda v: java_double(v) if isinstance(v, (int, float)) else _fmt_any(v)
    else:
        lo, hi, java = _INT_RANGES.get(kind, _INT_RANGES["long"])
        target = "an Integer" if kind == "integer" else "a Long"

        def direct(v: Any, path: str) -> tuple[str, ...] | list[str]:
            if type(v) is not int:
                if v is True or v is False or not isinstance(v, int):
                    if isinstance(v, float) and v.is_integer():
                        v = int(v)  # JSON "5.0": Jackson accepts it for an int
                    else:
                        raise _wrong_type(v, path, target)
            if v < lo or v > hi:
                raise SerializationException(f"Numeric value ({v}) out of range of {java} (at '{path}')")
            out: list[str] | None = None
            if mx is not None and v > mx:
                out = [r_max]
            if mn is not None and v < mn:
                out = (out or []) + [r_min]
            return out or _EMPTY

        node.fmt = lambda v: str(int(v)) if isinstance(v, float) and v.is_integer() else _fmt_any(v)
    node.direct = direct


def _build_boolean(node: _Node, shape: Shape) -> None:
    def direct(v: Any, path: str) -> tuple[str, ...]:
        if v is not True and v is not False:
            raise _wrong_type(v, path, "a Boolean")
        return _EMPTY

    node.direct = direct


def _build_blob(node: _Node, shape: Shape) -> None:
    mx, mn = _bound_rules(node, shape.metadata, True, False)
    r_max = f"Member must have length less than or equal to {mx}"
    r_min = f"Member must have length greater than or equal to {mn}"

    def direct(v: Any, path: str) -> tuple[str, ...] | list[str]:
        if isinstance(v, (bytes, bytearray, memoryview)):
            n = len(v) if not isinstance(v, memoryview) else v.nbytes
        elif isinstance(v, str):  # tolerated: a caller that did not decode
            n = len(v.encode("utf-8"))
        else:
            raise _wrong_type(v, path, "a Blob")
        out: list[str] | None = None
        if mx is not None and n > mx:
            out = [r_max]
        if mn is not None and n < mn:
            out = (out or []) + [r_min]
        return out or _EMPTY

    node.direct = direct


def _build_timestamp(node: _Node, shape: Shape) -> None:
    def direct(v: Any, path: str) -> tuple[str, ...]:
        if v is True or v is False or not isinstance(v, (datetime.datetime, datetime.date, int, float, str)):
            raise _wrong_type(v, path, "a Timestamp")
        return _EMPTY

    node.direct = direct


def _build_other(node: _Node, shape: Shape) -> None:
    """Documents and unknown types: accepted as they are."""


def _summary(label: str, elem: _Node, not_null: bool) -> str:
    rules = list(elem.rules)
    if not_null:
        rules.append(NOT_NULL)
    return f"{label} must satisfy constraint: [{', '.join(rules)}]" if rules else ""


def _list_member_not_null(elem: _Node) -> bool:
    return elem.name not in _NULLABLE_LIST_MEMBERS


def _map_value_not_null(elem: _Node) -> bool:
    if elem.kind in ("list", "map"):
        return False
    return not (elem.kind == "string" and any("length" in r for r in elem.rules))


def _build_list(node: _Node, shape: Shape) -> None:
    mx, mn = _bound_rules(node, shape.metadata, True, False)
    r_max = f"Member must have length less than or equal to {mx}"
    r_min = f"Member must have length greater than or equal to {mn}"
    elem = _compile(shape.member)
    node.member = elem
    node.hide = node.hide or elem.hide
    node.element_rule = _summary("Member", elem, _list_member_not_null(elem))
    element_rule = node.element_rule
    complex_elems = elem.kind in ("structure", "list", "map")
    node.fmt = lambda v: "[" + ", ".join("null" if e is None else elem.fmt(e) for e in v) + "]"

    def direct(v: Any, path: str) -> tuple[str, ...] | list[str]:
        if not isinstance(v, (list, tuple)):
            raise _wrong_type(v, path, "a List")
        elem_direct = elem.direct  # looked up per call: a recursive shape's node may still be under construction
        out: list[str] | None = None
        n = len(v)
        if mx is not None and n > mx:
            out = [r_max]
        if mn is not None and n < mn:
            out = (out or []) + [r_min]
        if element_rule:
            for i, e in enumerate(v, 1):
                if e is None or elem_direct(e, f"{path}.{i}.member" if complex_elems else path):
                    out = (out or []) + [element_rule]
                    break
        elif not complex_elems:
            for e in v:  # still type-check the elements
                if e is not None:
                    elem_direct(e, path)
        return out or _EMPTY

    node.direct = direct
    if complex_elems:
        elem_has_direct = not element_rule

        def nested(v: Any, path: str, errors: list[str]) -> None:
            elem_nested = elem.nested
            for i, e in enumerate(v, 1):
                if e is not None:
                    p = f"{path}.{i}.member"
                    if elem_has_direct:
                        elem.direct(e, p)  # the type check `direct` skipped
                    if elem_nested is not None:
                        elem_nested(e, p, errors)

        node.nested = nested


def _build_map(node: _Node, shape: Shape) -> None:
    mx, mn = _bound_rules(node, shape.metadata, True, False)
    r_max = f"Member must have length less than or equal to {mx}"
    r_min = f"Member must have length greater than or equal to {mn}"
    knode = _compile(shape.key)
    vnode = _compile(shape.value)
    node.key, node.value = knode, vnode
    node.hide = node.hide or knode.hide or vnode.hide
    node.key_rule = key_rule = _summary("Map keys", knode, False)
    node.value_rule = value_rule = _summary("Map value", vnode, _map_value_not_null(vnode))
    complex_values = vnode.kind in ("structure", "list", "map")
    node.fmt = lambda v: "{" + ", ".join(
        f"{knode.fmt(k)}={'null' if e is None else vnode.fmt(e)}" for k, e in v.items()
    ) + "}"

    def direct(v: Any, path: str) -> tuple[str, ...] | list[str]:
        if not isinstance(v, dict):
            raise _wrong_type(v, path, "a Map")
        k_direct, v_direct = knode.direct, vnode.direct
        out: list[str] | None = None
        n = len(v)
        if mx is not None and n > mx:
            out = [r_max]
        if mn is not None and n < mn:
            out = (out or []) + [r_min]
        if key_rule:
            for k in v:
                if k_direct(k, path):
                    out = (out or []) + [key_rule]
                    break
        if value_rule:
            for k, e in v.items():
                if e is None or v_direct(e, f"{path}.{k}.member" if complex_values else path):
                    out = (out or []) + [value_rule]
                    break
        elif not complex_values:
            for e in v.values():
                if e is not None:
                    v_direct(e, path)
        return out or _EMPTY

    node.direct = direct
    if complex_values:
        v_has_direct = not value_rule

        def nested(v: Any, path: str, errors: list[str]) -> None:
            v_nested = vnode.nested
            for k, e in v.items():
                if e is not None:
                    p = f"{path}.{k}.member"
                    if v_has_direct:
                        vnode.direct(e, p)
                    if v_nested is not None:
                        v_nested(e, p, errors)

        node.nested = nested


def _build_structure(node: _Node, shape: Shape) -> None:
    required = set(shape.required_members)
    members = []
    for name, mshape in shape.members.items():
        child = _compile(mshape)
        members.append((name, _camel(name), child, name in required))
    node.members = tuple(members)
    node.hide = node.hide or any(child.hide for _, _, child, _ in members)
    node.fmt = lambda v: "{" + ", ".join(
        f"{name}={'null' if v.get(name) is None else child.fmt(v[name])}"
        for name, _, child, _ in node.members
        if name in v
    ) + "}"

    def direct(v: Any, path: str) -> tuple[str, ...]:
        if not isinstance(v, dict):
            raise _wrong_type(v, path or shape.name, "a Structure")
        return _EMPTY

    def nested(v: Any, path: str, errors: list[str]) -> None:
        get = v.get
        for name, camel, child, req in node.members:
            value = get(name)
            if value is None:
                if req:
                    p = f"{path}.{camel}" if path else camel
                    errors.append(f"Value null at '{p}' failed to satisfy constraint: {NOT_NULL}")
                continue
            p = f"{path}.{camel}" if path else camel
            for rule in child.direct(value, p):
                errors.append(child.message(value, p, rule))
            if child.nested is not None:
                child.nested(value, p, errors)

    node.direct = direct
    node.nested = nested


_BUILDERS: dict[str, Callable[[_Node, Shape], None]] = {
    "string": _build_string,
    "integer": _build_number,
    "long": _build_number,
    "double": _build_number,
    "float": _build_number,
    "boolean": _build_boolean,
    "blob": _build_blob,
    "timestamp": _build_timestamp,
    "list": _build_list,
    "map": _build_map,
    "structure": _build_structure,
}


# --------------------------------------------------------------------------------------------- Java regexes

_PATTERNS: dict[str, re.Pattern[str] | None] = {}

# Java's `.` excludes every line terminator, not just "\n".
_DOT = "[^\\n\\r\\x85\\u2028\\u2029]"
_POSIX: dict[str, list[tuple[int, int]]] = {
    "Lower": [(0x61, 0x7A)],
    "Upper": [(0x41, 0x5A)],
    "ASCII": [(0x00, 0x7F)],
    "Alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "Digit": [(0x30, 0x39)],
    "Alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "Punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "Graph": [(0x21, 0x7E)],
    "Print": [(0x20, 0x7E)],
    "Blank": [(0x09, 0x09), (0x20, 0x20)],
    "Cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "XDigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
    "Space": [(0x09, 0x0D), (0x20, 0x20)],
}
_ALIASES = {
    "IsAlphabetic": ("L", "Nl"), "Alphabetic": ("L", "Nl"), "IsLetter": ("L",), "Letter": ("L",),
    "IsDigit": ("Nd",), "IsUppercase": ("Lu",), "IsLowercase": ("Ll",), "IsPunctuation": ("P",),
    "IsControl": ("Cc",), "javaLowerCase": ("Ll",), "javaUpperCase": ("Lu",), "javaDigit": ("Nd",),
    "javaLetter": ("L",), "javaLetterOrDigit": ("L", "Nd"), "IsWhite_Space": ("Zs", "Zl", "Zp"),
    "IsWhiteSpace": ("Zs", "Zl", "Zp"), "javaWhitespace": ("Zs", "Zl", "Zp"),
}
_H_SPACE = [(0x09, 0x09), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x180E, 0x180E), (0x2000, 0x200A),
            (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]
_V_SPACE = [(0x0A, 0x0D), (0x85, 0x85), (0x2028, 0x2029)]
_CATEGORIES: dict[str, list[tuple[int, int]]] | None = None


def _categories() -> dict[str, list[tuple[int, int]]]:
    """Code point ranges of every Unicode general category (and major class), built once on demand."""
    global _CATEGORIES
    if _CATEGORIES is None:
        cats: dict[str, list[tuple[int, int]]] = {}
        cur, start = None, 0
        for cp in range(0x110001):
            cat = unicodedata.category(chr(cp)) if cp <= 0x10FFFF else None
            if cat != cur:
                if cur is not None:
                    cats.setdefault(cur, []).append((start, cp - 1))
                    cats.setdefault(cur[0], []).append((start, cp - 1))
                cur, start = cat, cp
        _CATEGORIES = {k: _merge(v) for k, v in cats.items()}
    return _CATEGORIES


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, nxt = [], 0
    for lo, hi in _merge(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= 0x10FFFF:
        out.append((nxt, 0x10FFFF))
    return out


def _property(name: str) -> list[tuple[int, int]]:
    if name in _POSIX:
        return _POSIX[name]
    if name.startswith("Is") and name[2:] in _POSIX:
        return _POSIX[name[2:]]
    if name in _ALIASES:
        cats = _categories()
        return _merge([r for c in _ALIASES[name] for r in cats.get(c, [])])
    for prefix in ("general_category=", "gc=", "Is", ""):
        if name.startswith(prefix):
            cat = name[len(prefix):]
            if cat == "LC" or cat == "L&":
                cats = _categories()
                return _merge(cats["Lu"] + cats["Ll"] + cats["Lt"])
            if cat in ("L", "M", "N", "P", "S", "Z", "C") or (len(cat) == 2 and cat[0] in "LMNPSZC"):
                return _categories().get(cat, [])
    raise ValueError(f"unsupported property \\p{{{name}}}")


def _esc_cp(cp: int) -> str:
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _class_body(ranges: list[tuple[int, int]]) -> str:
    return "".join(_esc_cp(lo) if lo == hi else f"{_esc_cp(lo)}-{_esc_cp(hi)}" for lo, hi in ranges)


def java_regex(pattern: str) -> str:
    """Translate a Java regular expression to an equivalent for Python's `re` (compiled with re.ASCII, which
    gives `\\d`, `\\w`, `\\s` and `\\b` Java's ASCII meaning). Raises ValueError for constructs it cannot map."""
    out: list[str] = []
    i, n = 0, len(pattern)
    depth = 0  # character-class nesting; nested unions are flattened into the outer class
    prev_was_class_escape = False
    while i < n:
        c = pattern[i]
        class_escape = False
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("trailing backslash")
            d = pattern[i + 1]
            i += 2
            if d in "pP":
                if i < n and pattern[i] == "{":
                    end = pattern.index("}", i)
                    name, i = pattern[i + 1:end], end + 1
                else:
                    name, i = pattern[i], i + 1
                ranges = _property(name)
                if d == "P":
                    ranges = _complement(ranges)
                body = _class_body(ranges)
                out.append(body if depth else f"[{body}]")
                class_escape = True
            elif d == "Q":
                end = pattern.find("\\E", i)
                lit = pattern[i:] if end < 0 else pattern[i:end]
                i = n if end < 0 else end + 2
                out.append("".join(_esc_cp(ord(ch)) for ch in lit) if depth else re.escape(lit))
            elif d == "E":
                pass
            elif d in "hHvV":
                ranges = _H_SPACE if d in "hH" else _V_SPACE
                if d in "HV":
                    ranges = _complement(ranges)
                body = _class_body(ranges)
                out.append(body if depth else f"[{body}]")
                class_escape = True
            elif d == "z":
                out.append("\\Z")
            elif d == "Z":
                if depth:
                    raise ValueError("\\Z in a character class")
                out.append("(?=(?:\\r\\n|[\\n\\r\\x85\\u2028\\u2029])?\\Z)")
            elif d == "R":
                if depth:
                    raise ValueError("\\R in a character class")
                out.append("(?:\\r\\n|[\\n\\x0b\\f\\r\\x85\\u2028\\u2029])")
            elif d == "e":
                out.append("\\x1b")
            elif d == "a":
                out.append("\\x07")
            elif d == "c":
                out.append(_esc_cp(ord(pattern[i]) ^ 64))
                i += 1
            elif d == "x" and i < n and pattern[i] == "{":
                end = pattern.index("}", i)
                out.append(_esc_cp(int(pattern[i + 1:end], 16)))
                i = end + 1
            elif d == "0":
                j = i
                while j < n and j - i < 3 and pattern[j] in "01234567":
                    j += 1
                if j == i:
                    raise ValueError("bad octal escape")
                digits = pattern[i:j]
                if len(digits) == 3 and digits[0] > "3":
                    digits, j = digits[:2], j - 1
                out.append(_esc_cp(int(digits, 8)))
                i = j
            elif d == "k" and i < n and pattern[i] == "<":
                end = pattern.index(">", i)
                out.append(f"(?P={pattern[i + 1:end]})")
                i = end + 1
            elif d in "GX":
                raise ValueError(f"unsupported escape \\{d}")
            elif d in "dDwWsS":
                out.append("\\" + d)
                class_escape = True
            elif d.isalnum() and d not in "tnrfbBAuxU123456789":
                raise ValueError(f"unknown escape \\{d}")
            else:
                out.append("\\" + d)
        elif depth:
            if c == "[":
                if pattern.startswith("[^", i):
                    raise ValueError("negated nested character class")
                depth += 1
                i += 1
                continue
            if c == "]":
                depth -= 1
                if depth == 0:
                    out.append("]")
                i += 1
                prev_was_class_escape = False
                continue
            if c == "&" and pattern.startswith("&&", i):
                raise ValueError("character class intersection")
            if c == "-" and (prev_was_class_escape or (out and out[-1] == "-")):
                out.append("\\-")
            elif c in "~|&[":
                out.append("\\" + c)
            else:
                out.append(c)
            i += 1
        else:
            if c == "[":
                depth = 1
                out.append("[")
                i += 1
                if i < n and pattern[i] == "^":
                    out.append("^")
                    i += 1
                if i < n and pattern[i] == "]":  # a leading ']' is literal in Java
                    out.append("\\]")
                    i += 1
                prev_was_class_escape = False
                continue
            if c == ".":
                out.append(_DOT)
            elif c == "(" and pattern.startswith("(?<", i) and not pattern.startswith(("(?<=", "(?<!"), i):
                out.append("(?P<")
                i += 3
                continue
            else:
                out.append(c)
            i += 1
        prev_was_class_escape = class_escape
    if depth:
        raise ValueError("unterminated character class")
    return "".join(out)


def compile_java_regex(pattern: str) -> re.Pattern[str] | None:
    """The compiled Python equivalent of a Java pattern (cached); None if it cannot be translated."""
    try:
        return _PATTERNS[pattern]
    except KeyError:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled: re.Pattern[str] | None = re.compile(java_regex(pattern), re.ASCII)
    except (ValueError, re.error) as exc:
        log.warning("pattern %r is not enforced: cannot translate it from Java (%s)", pattern, exc)
        compiled = None
    _PATTERNS[pattern] = compiled
    return compiled
