"""CloudWatch Logs filter patterns (FilterLogEvents' `filterPattern`, described in
`faas.services.cloudwatch_logs`) compiled to `Matcher`s. Apart from the service so that the log store's
process, which compiles each pattern again from its source, imports nothing of the web stack."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec


class Matcher(msgspec.Struct, frozen=True):
    """A compiled filter: `accepts(message)`; what SQL can test first: substrings every accepted message
    contains, and whether only JSON objects can match."""

    accepts: Callable[[str], bool] | None = None
    required: tuple[str, ...] = ()
    json: bool = False
    source: str = ""  # the filter pattern it was compiled from

    def __reduce__(self) -> tuple[Any, ...]:
        # `accepts` is a closure, which pickle cannot send to the log store's process: the pattern is
        # compiled again there.
        return (compile_filter, (self.source,))


class PatternError(Exception):
    pass


def compile_filter(pattern: str) -> Matcher:
    """A filter pattern as a `Matcher`; raises PatternError for one CloudWatch would reject."""
    return msgspec.structs.replace(_compile_filter(pattern), source=pattern)


def _compile_filter(pattern: str) -> Matcher:
    text = pattern.strip()
    if not text or text == '""':
        return Matcher()
    if text.startswith("{"):
        return Matcher(_json_matcher(text), json=True)
    if text.startswith("["):
        raise PatternError("space-delimited patterns ([...]) are not supported by this server")
    if len(text) >= 2 and text.startswith("%") and text.endswith("%"):
        try:
            regex = re.compile(text[1:-1])
        except re.error as exc:
            raise PatternError(str(exc)) from None
        return Matcher(lambda m: regex.search(m) is not None)
    return _term_matcher(text)


_TERM = re.compile(r'\s*([-?]?)(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))')


def _term_matcher(text: str) -> Matcher:
    required: list[str] = []
    excluded: list[str] = []
    optional: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise PatternError(f"unbalanced quotes in {text!r}")
            break
        pos = m.end()
        sign, quoted, bare = m.groups()
        term = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        if not term:
            continue
        {"": required, "-": excluded, "?": optional}[sign].append(term)
    req, exc, opt = tuple(required), tuple(excluded), tuple(optional)

    def accepts(message: str) -> bool:
        if any(t in message for t in exc):
            return False
        return not opt or any(t in message for t in opt)

    # Required terms are tested in SQL; only exclusions and alternatives need Python.
    return Matcher(accepts if exc or opt else None, req)


# JSON patterns: { SELECTOR OP VALUE }, IS NULL/TRUE/FALSE, NOT EXISTS, joined with && and || in parentheses.
_JSON_TOKEN = re.compile(
    r'\s*(?:(?P<op>&&|\|\||!=|<=|>=|=|<|>|\(|\))|(?P<sel>\$(?:\.[A-Za-z0-9_@-]+|\[\d+\])*)'
    r'|"(?P<str>(?:[^"\\]|\\.)*)"|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w.])|(?P<word>[^\s()=<>!&|"]+))'
)
_MISSING = object()
JsonTest = Callable[[Any], bool]


def _json_matcher(text: str) -> Callable[[str], bool]:
    if not text.endswith("}"):
        raise PatternError("a JSON pattern ends with '}'")
    tokens = _json_tokens(text[1:-1])
    test, rest = _parse_or(tokens)
    if rest:
        raise PatternError(f"unexpected {rest[0][1]!r}")

    def accepts(message: str) -> bool:
        if not message.lstrip().startswith("{"):
            return False
        try:
            doc = msgspec.json.decode(message)
        except msgspec.DecodeError:
            return False
        return isinstance(doc, dict) and test(doc)

    return accepts


def _json_tokens(body: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(body):
        m = _JSON_TOKEN.match(body, pos)
        if m is None:
            if body[pos:].strip():
                raise PatternError(f"cannot read {body[pos:].strip()!r}")
            break
        pos = m.end()
        kind = m.lastgroup
        value: Any = m.group(kind) if kind else None
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value)
        elif kind == "num":
            value = float(value)
        tokens.append((kind or "", value))
    return tokens


def _parse_or(tokens: list[tuple[str, Any]]) -> tuple[JsonTest, list[tuple[str, Any]]]:
    left, tokens = _parse_and(tokens)
    while tokens and tokens[0] == ("op", "||"):
        right, tokens = _parse_and(tokens[1:])
        left = _either(left, right)
    return left, tokens


def _parse_and(tokens: list[tuple[str, Any]]) -> tuple[JsonTest, list[tuple[str, Any]]]:
    left, tokens = _parse_unit(tokens)
    while tokens and tokens[0] == ("op", "&&"):
        right, tokens = _parse_unit(tokens[1:])
        left = _both(left, right)
    return left, tokens


def _either(a: JsonTest, b: JsonTest) -> JsonTest:
    return lambda d: a(d) or b(d)


def _both(a: JsonTest, b: JsonTest) -> JsonTest:
    return lambda d: a(d) and b(d)


def _parse_unit(tokens: list[tuple[str, Any]]) -> tuple[JsonTest, list[tuple[str, Any]]]:
    if not tokens:
        raise PatternError("the pattern ends too early")
    if tokens[0] == ("op", "("):
        inner, tokens = _parse_or(tokens[1:])
        if not tokens or tokens[0] != ("op", ")"):
            raise PatternError("missing ')'")
        return inner, tokens[1:]
    kind, selector = tokens[0]
    if kind != "sel":
        raise PatternError(f"expected a selector like $.field, found {selector!r}")
    get = _selector(selector)
    words = [str(v).upper() for _, v in tokens[1:3]]
    if words[:2] == ["IS", "NULL"]:
        return (lambda d: get(d) is None), tokens[3:]
    if words[:2] in (["IS", "TRUE"], ["IS", "FALSE"]):
        want = words[1] == "TRUE"
        return (lambda d: get(d) is want), tokens[3:]
    if words[:2] == ["NOT", "EXISTS"]:
        return (lambda d: get(d) is _MISSING), tokens[3:]
    if words[:1] == ["EXISTS"]:
        return (lambda d: get(d) is not _MISSING), tokens[2:]
    if len(tokens) < 3 or tokens[1][0] != "op" or tokens[1][1] not in ("=", "!=", "<", "<=", ">", ">="):
        raise PatternError(f"expected a comparison after {selector}")
    return _comparison(get, tokens[1][1], tokens[2]), tokens[3:]


def _selector(text: str) -> Callable[[Any], Any]:
    steps: list[str | int] = [int(s[1:-1]) if s.startswith("[") else s[1:]
                              for s in re.findall(r"\.[A-Za-z0-9_@-]+|\[\d+\]", text)]

    def get(doc: Any) -> Any:
        for step in steps:
            if isinstance(step, int):
                if not isinstance(doc, list) or step >= len(doc):
                    return _MISSING
                doc = doc[step]
            elif isinstance(doc, dict) and step in doc:
                doc = doc[step]
            else:
                return _MISSING
        return doc

    return get


def _comparison(get: Callable[[Any], Any], op: str, value: tuple[str, Any]) -> JsonTest:
    kind, literal = value
    if kind == "num":
        number = literal
        compare = {"=": lambda a: a == number, "!=": lambda a: a != number, "<": lambda a: a < number,
                   "<=": lambda a: a <= number, ">": lambda a: a > number, ">=": lambda a: a >= number}[op]

        def numeric(d: Any) -> bool:
            v = get(d)
            return isinstance(v, (int, float)) and not isinstance(v, bool) and compare(v)

        return numeric
    if kind not in ("str", "word") or op not in ("=", "!="):
        raise PatternError(f"operator {op} needs a number")
    if kind == "word" and literal.lower() in ("true", "false", "null"):
        want = {"true": True, "false": False, "null": None}[literal.lower()]
        return (lambda d: get(d) is want) if op == "=" else (lambda d: get(d) is not want)
    glob = re.compile("".join(".*" if c == "*" else re.escape(c) for c in literal), re.DOTALL)
    equal = op == "="

    def string(d: Any) -> bool:
        v = get(d)
        if v is _MISSING or v is None or isinstance(v, (dict, list, bool)):
            return False
        text = v if isinstance(v, str) else msgspec.json.encode(v).decode()
        return (glob.fullmatch(text) is not None) == equal

    return string

