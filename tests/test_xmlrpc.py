from __future__ import annotations

import datetime
import time
import xmlrpc.client

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sm.errors import BadRequest, IllegalXMLChar
from sm.xmlrpc import (
    MAX_DEPTH,
    MAX_REQUEST_BYTES,
    dumps_call,
    dumps_fault,
    dumps_response,
    loads_call,
)


def doc(*values: str, method: str = "m") -> str:
    params = "".join(f"<param>{v}</param>" for v in values)
    return f"<methodCall><methodName>{method}</methodName><params>{params}</params></methodCall>"


def one(value_xml: str):
    method, params = loads_call(doc(value_xml))
    assert method == "m"
    (value,) = params
    return value


# -- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ("<value>plain</value>", "plain"),
        ("<value>  spaced \n</value>", "  spaced \n"),
        ("<value></value>", ""),
        ("<value/>", ""),
        ("<value><string>typed</string></value>", "typed"),
        ("<value><string/></value>", ""),
        ("<value><string>a &amp; &lt;b&gt; &#233;</string></value>", "a & <b> \u00e9"),
        ("<value><int>42</int></value>", 42),
        ("<value><i4>-7</i4></value>", -7),
        ("<value><i8>9223372036854775807</i8></value>", 2**63 - 1),
        ("<value><int> +3 </int></value>", 3),
        ("<value><boolean>1</boolean></value>", True),
        ("<value><boolean>0</boolean></value>", False),
        ("<value><double>1.5</double></value>", 1.5),
        ("<value><double>-2e3</double></value>", -2000.0),
        ("<value><nil/></value>", None),
        ("<value><base64>aGVs\nbG8=</base64></value>", b"hello"),
        (
            "<value><dateTime.iso8601>20240131T23:59:01</dateTime.iso8601></value>",
            datetime.datetime(2024, 1, 31, 23, 59, 1),
        ),
        (
            "<value><dateTime.iso8601>2024-01-31T23:59:01</dateTime.iso8601></value>",
            datetime.datetime(2024, 1, 31, 23, 59, 1),
        ),
        ("<value><array><data/></array></value>", []),
        ("<value><struct/></value>", {}),
    ],
)
def test_values(xml: str, expected: object) -> None:
    value = one(xml)
    assert value == expected
    assert type(value) is type(expected)


def test_nested_struct_and_array_untyped_and_typed() -> None:
    xml = """
    <value><struct>
      <member><name>command</name><value>vdi_attach</value></member>
      <member><name>args</name><value><array><data>
          <value>true</value><value><string>x</string></value>
          <value><array><data><value><int>1</int></value></data></array></value>
      </data></array></value></member>
      <member><name>device_config</name><value><struct>
          <member><name>SRmaster</name><value>true</value></member>
      </struct></value></member>
    </struct></value>"""
    assert one(xml) == {
        "command": "vdi_attach",
        "args": ["true", "x", [1]],
        "device_config": {"SRmaster": "true"},
    }


def test_bytes_input_and_no_params() -> None:
    assert loads_call(
        b"<?xml version='1.0'?><methodCall><methodName>x</methodName></methodCall>"
    ) == ("x", [])
    assert loads_call("<methodCall><methodName> y </methodName><params/></methodCall>") == ("y", [])


def test_python_client_documents() -> None:
    struct = {"a": [1, True, 1.5, "s<&>", None], "b": {"c": b"\x00\xff"}}
    text = xmlrpc.client.dumps((struct, "two"), methodname="sr_scan", allow_none=True)
    assert loads_call(text) == ("sr_scan", [struct, "two"])
    assert loads_call(text.encode()) == ("sr_scan", [struct, "two"])


# -- refusals ---------------------------------------------------------------------------------

MALFORMED = [
    "",
    "not xml",
    "<methodCall>",
    "<methodCall><methodName>m</methodName></methodCall><extra/>",
    "<methodResponse><params/></methodResponse>",
    "<methodCall><params/></methodCall>",
    "<methodCall><methodName></methodName></methodCall>",
    "<methodCall><methodName>a b</methodName></methodCall>",
    "<methodCall><methodName>m<b/></methodName></methodCall>",
    "<methodCall><methodName>m</methodName><params/><params/></methodCall>",
    "<methodCall><methodName>m</methodName><foo/></methodCall>",
    "<methodCall>text<methodName>m</methodName></methodCall>",
    doc("<foo/>"),
    doc("<value>1</value><value>2</value>"),
    doc("<value><int>1.5</int></value>"),
    doc("<value><int>12345678901234567890</int></value>"),
    doc("<value><int>99999999999999999999999</int></value>"),
    doc("<value><int></int></value>"),
    doc("<value><boolean>true</boolean></value>"),
    doc("<value><boolean>2</boolean></value>"),
    doc("<value><double>nan</double></value>"),
    doc("<value><double>inf</double></value>"),
    doc("<value><double>1e999</double></value>"),
    doc("<value><nil>x</nil></value>"),
    doc("<value><base64>!!!</base64></value>"),
    doc("<value><dateTime.iso8601>yesterday</dateTime.iso8601></value>"),
    doc("<value><dateTime.iso8601>20241399T00:00:00</dateTime.iso8601></value>"),
    doc("<value><float>1</float></value>"),
    doc("<value><string>a</string><string>b</string></value>"),
    doc("<value>text<string>b</string></value>"),
    doc("<value><string><b/></string></value>"),
    doc("<value><struct><member><name>a</name></member></struct></value>"),
    doc("<value><struct><member><value>1</value><name>a</name></member></struct></value>"),
    doc("<value><struct><foo/></struct></value>"),
    doc(
        "<value><struct><member><name>a</name><value>1</value></member>"
        "<member><name>a</name><value>2</value></member></struct></value>"
    ),
    doc("<value><array><value>1</value></array></value>"),
    doc("<value><array><data><int>1</int></data></array></value>"),
    doc('<value xmlns="urn:x"><string>a</string></value>'),
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_is_bad_request(text: str) -> None:
    with pytest.raises(BadRequest) as info:
        loads_call(text)
    assert info.value.code == 143


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<methodCall><methodName>m</methodName><params><param><value>&lol9;</value></param></params></methodCall>"""

HOSTILE = {
    "billion_laughs": BILLION_LAUGHS,
    "external_entity": """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>m</methodName><params><param><value>&xxe;</value></param></params></methodCall>""",
    "external_dtd": """<?xml version="1.0"?>
<!DOCTYPE methodCall SYSTEM "http://127.0.0.1:9/evil.dtd">
<methodCall><methodName>m</methodName></methodCall>""",
    "parameter_entity": """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>
<methodCall><methodName>m</methodName></methodCall>""",
    "internal_entity": """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY e "sr_scan">]>
<methodCall><methodName>&e;</methodName></methodCall>""",
    "empty_doctype": """<?xml version="1.0"?><!DOCTYPE methodCall>
<methodCall><methodName>m</methodName></methodCall>""",
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_documents_refused(name: str) -> None:
    with pytest.raises(BadRequest):
        loads_call(HOSTILE[name])
    with pytest.raises(BadRequest):
        loads_call(HOSTILE[name].encode())


def test_size_limit_checked_before_parsing() -> None:
    big = doc("<value>" + "a" * MAX_REQUEST_BYTES + "</value>")
    started = time.process_time()
    with pytest.raises(BadRequest, match="bytes"):
        loads_call(big)
    # Not a speed assertion: the parser must not even have run (it would take far longer).
    assert time.process_time() - started < 5


def test_depth_limit() -> None:
    inner = "<value>x</value>"
    for _ in range(MAX_DEPTH + 2):
        inner = f"<value><array><data>{inner}</data></array></value>"
    with pytest.raises(BadRequest, match="nested"):
        loads_call(doc(inner))
    ok = "<value>x</value>"
    for _ in range(MAX_DEPTH - 1):
        ok = f"<value><array><data>{ok}</data></array></value>"
    loads_call(doc(ok))


# -- writing ----------------------------------------------------------------------------------


def test_response_is_byte_compatible_with_xmlrpc_client() -> None:
    value = {
        "a": [1, True, 1.5, "s<&>\"'", b"bytes", datetime.datetime(2020, 1, 2, 3, 4, 5)],
        "b": {},
        "c": [],
        "d": {"nested": {"x": "y"}},
    }
    assert dumps_response(value) == xmlrpc.client.dumps((value,), methodresponse=True)
    assert dumps_fault(38, "no <way>") == xmlrpc.client.dumps(
        xmlrpc.client.Fault(38, "no <way>"), methodresponse=True
    )


def test_response_roundtrips_through_xmlrpc_client() -> None:
    value = ["line\r\nbreak", 2**40, -(2**63), None, {"k": None}, "\u00e9\U0001f600"]
    (back,), _ = xmlrpc.client.loads(dumps_response(value))
    assert back == value
    (back2,), _ = xmlrpc.client.loads(dumps_response("x"))
    assert back2 == "x"


def test_fault_parses() -> None:
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(dumps_fault(144, "VDI could not be found"))
    assert (info.value.faultCode, info.value.faultString) == (144, "VDI could not be found")


@pytest.mark.parametrize("bad", ["nul\x00", "bell\x07", "\ufffe", "\ud800", "esc\x1b[0m"])
def test_illegal_xml_characters(bad: str) -> None:
    with pytest.raises(IllegalXMLChar) as info:
        dumps_response({"name": bad})
    assert info.value.code == 447
    with pytest.raises(IllegalXMLChar):
        dumps_response({bad: "key"})
    # A fault must always be writable: the character is replaced, the document stays valid.
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(dumps_fault(1200, f"message {bad}"))
    assert "\ufffd" in fault.value.faultString


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2**64, object(), {1: "x"}])
def test_values_without_wire_form(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        dumps_response(value)  # type: ignore[arg-type]


_xml_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff").filter(
        lambda c: c in "\t\n\r" or ord(c) >= 0x20
    )
)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _xml_text
    | st.binary(max_size=64),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_xml_text, children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.lists(_values, max_size=3))
def test_call_roundtrip(params: list[object]) -> None:
    assert loads_call(dumps_call("vdi_create", params)) == ("vdi_create", params)  # type: ignore[arg-type]


def test_illegal_xml_characters_are_exactly_the_complement_of_xml_char() -> None:
    """XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]."""
    from sm.xmlrpc import _ILLEGAL_XML_RE

    def legal(c: int) -> bool:
        return (c in (0x9, 0xA, 0xD) or 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD
                or 0x10000 <= c <= 0x10FFFF)

    text = "".join(map(chr, range(0x110000)))
    found = {m.start() for m in _ILLEGAL_XML_RE.finditer(text)}
    assert found == {c for c in range(0x110000) if not legal(c)}
