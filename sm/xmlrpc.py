"""XML-RPC documents for the SMAPIv1 wire: parse a `methodCall`, build a response or a Fault.

Parsing goes through defusedxml with DTDs, entities and external references forbidden, and a
size limit checked before the parser runs, so billion-laughs and external-entity documents are
refused at once. Anything that is not a well-formed, well-typed `methodCall` raises
`BadRequest` (143).

Values map to Python as in `xmlrpc.client`:

| XML-RPC | Python |
|---|---|
| `<string>`, untyped `<value>text</value>` | `str` (the toolstack sends untyped values) |
| `<int>`, `<i4>`, `<i8>` | `int` (any of them up to 64-bit signed) |
| `<boolean>` (`0`/`1`) | `bool` |
| `<double>` | `float` (finite) |
| `<struct>` | `dict[str, Value]` (duplicate member names are refused) |
| `<array>` | `list[Value]` |
| `<nil/>` | `None` |
| `<base64>` | `bytes` |
| `<dateTime.iso8601>` | `datetime.datetime` (naive) |

Output is byte-compatible with `xmlrpc.client.dumps(..., methodresponse=True, allow_none=True)`
(so `xmlrpc.client.loads` reads it), with two deliberate differences: integers beyond 32 bits are
written as `<i8>` instead of failing, and a carriage return in a string is written as `&#13;` so
it survives XML end-of-line normalisation. On the wire (`encode`) a document is ASCII, other
characters as character references (`&#233;`), whatever the environment's encoding.

Characters that XML 1.0 cannot carry at all (NUL, most C0 controls, lone surrogates, U+FFFE/F)
cannot be escaped. `dumps_response` refuses them with `IllegalXMLChar` (447), which the
dispatcher turns into a Fault, as the original drivers do; `dumps_fault` replaces them with
U+FFFD so that a Fault can always be written.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias
from xml.etree.ElementTree import Element as _Element
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from sm.errors import BadRequest, IllegalXMLChar

__all__ = [
    "MAX_DEPTH",
    "MAX_REQUEST_BYTES",
    "Value",
    "dumps_call",
    "dumps_fault",
    "dumps_response",
    "encode",
    "loads_call",
]

Value: TypeAlias = (
    "str | int | bool | float | bytes | datetime.datetime | dict[str, Value] | list[Value] | None"
)

MAX_REQUEST_BYTES = 1024 * 1024
"""Largest request document accepted (a real request is a few KiB)."""
MAX_DEPTH = 32
"""Deepest nesting of structs/arrays accepted."""

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")
_DOUBLE_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DATETIME_RE = re.compile(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})")
_METHOD_RE = re.compile(r"[A-Za-z0-9_.:/]{1,128}")
# The complement of XML 1.0's Char production (#x9 | #xA | #xD | [#x20-#xD7FF] |
# [#xE000-#xFFFD] | [#x10000-#x10FFFF]), spelled as the small set it is: compiling the negated
# form costs ~6 ms of every driver start (charset optimisation over the whole of Unicode).
_ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# -- parsing ----------------------------------------------------------------------------------


def loads_call(data: str | bytes) -> tuple[str, list[Value]]:
    """Parse a `methodCall` document into (method name, params). Raises `BadRequest`."""
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > MAX_REQUEST_BYTES:
        raise BadRequest(f"request is {size} bytes, more than the {MAX_REQUEST_BYTES} allowed")
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise BadRequest(f"forbidden XML construct: {err}") from err
    except (ParseError, ValueError) as err:
        raise BadRequest(f"malformed XML: {err}") from err
    if root.tag != "methodCall":
        raise BadRequest(f"expected <methodCall>, found <{root.tag}>")
    _no_text(root)
    children = list(root)
    if not children or children[0].tag != "methodName":
        raise BadRequest("<methodCall> must start with <methodName>")
    name_el = children[0]
    if len(name_el):
        raise BadRequest("<methodName> must hold text only")
    method = (name_el.text or "").strip()
    if not _METHOD_RE.fullmatch(method):
        raise BadRequest(f"invalid method name {method!r}")
    params: list[Value] = []
    if len(children) > 2:
        raise BadRequest("unexpected elements in <methodCall>")
    if len(children) == 2:
        params_el = children[1]
        if params_el.tag != "params":
            raise BadRequest(f"expected <params>, found <{params_el.tag}>")
        _no_text(params_el)
        for param in params_el:
            if param.tag != "param":
                raise BadRequest(f"expected <param>, found <{param.tag}>")
            _no_text(param)
            params.append(_value(_only_child(param, "value"), 0))
    return method, params


def _no_text(el: _Element) -> None:
    """Refuse non-whitespace text directly inside, or after the children of, a container."""
    if el.text and el.text.strip():
        raise BadRequest(f"unexpected text in <{el.tag}>")
    for child in el:
        if child.tail and child.tail.strip():
            raise BadRequest(f"unexpected text after <{child.tag}>")


def _only_child(el: _Element, tag: str) -> _Element:
    children = list(el)
    if len(children) != 1 or children[0].tag != tag:
        raise BadRequest(f"<{el.tag}> must hold exactly one <{tag}>")
    return children[0]


def _leaf_text(el: _Element) -> str:
    if len(el):
        raise BadRequest(f"<{el.tag}> must not hold elements")
    return el.text or ""


def _value(el: _Element, depth: int) -> Value:
    if depth > MAX_DEPTH:
        raise BadRequest(f"values nested deeper than {MAX_DEPTH}")
    children = list(el)
    if not children:
        return el.text or ""  # untyped value: a string, whitespace preserved
    _no_text(el)
    if len(children) != 1:
        raise BadRequest("<value> must hold exactly one typed element")
    typed = children[0]
    parse = _PARSERS.get(typed.tag)
    if parse is None:
        raise BadRequest(f"unknown value type <{typed.tag}>")
    return parse(typed, depth)


def _parse_string(el: _Element, depth: int) -> Value:
    return _leaf_text(el)


def _parse_int(el: _Element, depth: int) -> Value:
    text = _leaf_text(el).strip()
    if not _INT_RE.fullmatch(text):
        raise BadRequest(f"invalid <{el.tag}> {text[:40]!r}")
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise BadRequest(f"<{el.tag}> {text} out of the 64-bit range")
    return value


def _parse_boolean(el: _Element, depth: int) -> Value:
    text = _leaf_text(el).strip()
    if text not in ("0", "1"):
        raise BadRequest(f"invalid <boolean> {text[:40]!r} (expected 0 or 1)")
    return text == "1"


def _parse_double(el: _Element, depth: int) -> Value:
    text = _leaf_text(el).strip()
    if len(text) > 64 or not _DOUBLE_RE.fullmatch(text):
        raise BadRequest(f"invalid <double> {text[:40]!r}")
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"<double> {text[:40]!r} is not finite")
    return value


def _parse_nil(el: _Element, depth: int) -> Value:
    if len(el) or (el.text and el.text.strip()):
        raise BadRequest("<nil/> must be empty")
    return None


def _parse_base64(el: _Element, depth: int) -> Value:
    text = "".join(_leaf_text(el).split())
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadRequest(f"invalid <base64>: {err}") from err


def _parse_datetime(el: _Element, depth: int) -> Value:
    text = _leaf_text(el).strip()
    match = _DATETIME_RE.fullmatch(text)
    if match is None:
        raise BadRequest(f"invalid <dateTime.iso8601> {text[:40]!r}")
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        return datetime.datetime(year, month, day, hour, minute, second)
    except ValueError as err:
        raise BadRequest(f"invalid <dateTime.iso8601> {text!r}: {err}") from err


def _parse_struct(el: _Element, depth: int) -> Value:
    _no_text(el)
    result: dict[str, Value] = {}
    for member in el:
        if member.tag != "member":
            raise BadRequest(f"expected <member> in <struct>, found <{member.tag}>")
        _no_text(member)
        parts = list(member)
        if len(parts) != 2 or parts[0].tag != "name" or parts[1].tag != "value":
            raise BadRequest("<member> must hold <name> then <value>")
        name = _leaf_text(parts[0])
        if name in result:
            raise BadRequest(f"duplicate struct member {name!r}")
        result[name] = _value(parts[1], depth + 1)
    return result


def _parse_array(el: _Element, depth: int) -> Value:
    _no_text(el)
    data = _only_child(el, "data")
    _no_text(data)
    items: list[Value] = []
    for item in data:
        if item.tag != "value":
            raise BadRequest(f"expected <value> in <data>, found <{item.tag}>")
        items.append(_value(item, depth + 1))
    return items


# -- writing ----------------------------------------------------------------------------------


def dumps_response(value: Value) -> str:
    """A `methodResponse` document carrying one value.

    Raises `IllegalXMLChar` if a string holds a character XML cannot carry, TypeError/ValueError
    for a value that has no XML-RPC form (a programming error).
    """
    out = ["<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"]
    _dump(value, out, strict=True)
    out.append("</param>\n</params>\n</methodResponse>\n")
    return "".join(out)


def dumps_fault(code: int, message: str) -> str:
    """A Fault document; characters XML cannot carry are replaced by U+FFFD."""
    out = ["<?xml version='1.0'?>\n<methodResponse>\n<fault>\n"]
    _dump({"faultCode": code, "faultString": message}, out, strict=False)
    out.append("</fault>\n</methodResponse>\n")
    return "".join(out)


def encode(document: str) -> bytes:
    """A document's bytes as they go on the wire: ASCII, every other character written as a
    character reference, so any reader reads the same text whatever encoding it assumes (and
    whatever encoding the writer's environment names)."""
    return document.encode("ascii", "xmlcharrefreplace")


def dumps_call(method: str, params: Sequence[Value]) -> str:
    """A `methodCall` document (for clients and tests)."""
    out = [f"<?xml version='1.0'?>\n<methodCall>\n<methodName>{_escape(method, True)}</methodName>"]
    out.append("\n<params>\n")
    for param in params:
        out.append("<param>\n")
        _dump(param, out, strict=True)
        out.append("</param>\n")
    out.append("</params>\n</methodCall>\n")
    return "".join(out)


def _escape(text: str, strict: bool) -> str:
    if _ILLEGAL_XML_RE.search(text):
        if strict:
            bad = _ILLEGAL_XML_RE.search(text)
            assert bad is not None
            raise IllegalXMLChar(f"character U+{ord(bad.group()):04X} cannot be sent in XML")
        text = _ILLEGAL_XML_RE.sub("\ufffd", text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _dump(value: Value, out: list[str], *, strict: bool) -> None:
    # bool before int: bool is a subclass of int.
    if value is None:
        out.append("<value><nil/></value>\n")
    elif isinstance(value, bool):
        out.append(f"<value><boolean>{int(value)}</boolean></value>\n")
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        tag = "int" if _INT32_MIN <= value <= _INT32_MAX else "i8"
        out.append(f"<value><{tag}>{value}</{tag}></value>\n")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"double {value} has no XML-RPC form")
        out.append(f"<value><double>{value!r}</double></value>\n")
    elif isinstance(value, str):
        out.append(f"<value><string>{_escape(value, strict)}</string></value>\n")
    elif isinstance(value, bytes):
        encoded = base64.encodebytes(value).decode("ascii")
        out.append(f"<value><base64>\n{encoded}</base64></value>\n")
    elif isinstance(value, datetime.datetime):
        out.append(
            f"<value><dateTime.iso8601>{value.strftime('%Y%m%dT%H:%M:%S')}"
            "</dateTime.iso8601></value>\n"
        )
    elif isinstance(value, Mapping):
        out.append("<value><struct>\n")
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"struct key {key!r} is not a string")
            out.append(f"<member>\n<name>{_escape(key, strict)}</name>\n")
            _dump(item, out, strict=strict)
            out.append("</member>\n")
        out.append("</struct></value>\n")
    elif isinstance(value, list | tuple):
        out.append("<value><array><data>\n")
        for item in value:
            _dump(item, out, strict=strict)
        out.append("</data></array></value>\n")
    else:
        raise TypeError(f"{type(value).__name__} has no XML-RPC form")


_PARSERS: Mapping[str, Callable[[_Element, int], Value]] = {
    "string": _parse_string,
    "int": _parse_int,
    "i4": _parse_int,
    "i8": _parse_int,
    "boolean": _parse_boolean,
    "double": _parse_double,
    "nil": _parse_nil,
    "base64": _parse_base64,
    "dateTime.iso8601": _parse_datetime,
    "struct": _parse_struct,
    "array": _parse_array,
}
