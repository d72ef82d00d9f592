"""The SOAP wire (vim25): reading a request's method, target and arguments, and writing
responses and faults the way vCenter does (HTTP 500 with a `soapenv:Fault` whose detail is
`<XFault xsi:type="X">`, which pyvmomi turns into `vim.fault.X`)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
VIM = "urn:vim25"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ET.register_namespace("", VIM)
ET.register_namespace("soapenv", SOAPENV)
ET.register_namespace("xsi", XSI)
ET.register_namespace("xsd", "http://www.w3.org/2001/XMLSchema")

ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<soapenv:Envelope xmlns:soapenv="{SOAPENV}" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            f'xmlns:xsi="{XSI}"><soapenv:Body>{{}}</soapenv:Body></soapenv:Envelope>')


@dataclass
class Call:
    method: str
    this_type: str = ""
    this: str = ""
    args: dict[str, ET.Element] = field(default_factory=dict)

    def text(self, name: str, default: str = "") -> str:
        el = self.args.get(name)
        return (el.text or "").strip() if el is not None else default

    def flag(self, name: str) -> bool:
        return self.text(name).lower() in ("true", "1")


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_call(body: bytes) -> Call | None:
    """The method of a SOAP request, or None when the body is not one."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    soap_body = root.find(f"{{{SOAPENV}}}Body")
    if soap_body is None or len(soap_body) == 0:
        return None
    method = soap_body[0]
    call = Call(local(method.tag))
    for child in method:
        name = local(child.tag)
        if name == "_this":
            call.this_type, call.this = child.get("type", ""), (child.text or "").strip()
        else:
            call.args.setdefault(name, child)
    return call


def response(method: str, inner: str) -> bytes:
    return ENVELOPE.format(f'<{method}Response xmlns="{VIM}">{inner}</{method}Response>').encode()


def moref_response(method: str, kind: str, value: str) -> bytes:
    return response(method, f'<returnval type="{kind}">{escape(value)}</returnval>')


def fault(kind: str, message: str, fields: str = "") -> bytes:
    """A vim25 fault; `fields` is the fault's own properties as XML (e.g. `<file>..</file>`)."""
    detail = (f'<{kind}Fault xmlns="{VIM}" xsi:type="{kind}">{fields}</{kind}Fault>')
    return ENVELOPE.format(
        f"<soapenv:Fault><faultcode>ServerFaultCode</faultcode>"
        f"<faultstring>{escape(message)}</faultstring><detail>{detail}</detail>"
        f"</soapenv:Fault>").encode()


def returnval(body: bytes) -> tuple[str, str] | None:
    """(type, value) of a response's managed-object returnval (a Task, usually)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for el in root.iter(f"{{{VIM}}}returnval"):
        return el.get("type", ""), (el.text or "").strip()
    return None


def fetch_from_retrieve(body: bytes) -> bytes:
    """A FetchResponse made from a RetrievePropertiesEx answer for one property: the value's
    element renamed `returnval`, or no returnval when the property is unset."""
    root = ET.fromstring(body)
    val = next(root.iter(f"{{{VIM}}}val"), None)
    if val is None:
        return response("Fetch", "")
    val.tag = f"{{{VIM}}}returnval"
    val.tail = None
    inner = ET.tostring(val, encoding="unicode")
    return response("Fetch", inner)


def retrieve_one(this_type: str, this: str, prop: str) -> bytes:
    """RetrievePropertiesEx of one property of one object (what Fetch asks)."""
    inner = (f'<_this type="PropertyCollector">propertyCollector</_this><specSet>'
             f'<propSet><type>{escape(this_type)}</type><pathSet>{escape(prop)}</pathSet>'
             f'</propSet><objectSet><obj type="{escape(this_type)}">{escape(this)}</obj>'
             f'<skip>false</skip></objectSet></specSet><options></options>')
    return ENVELOPE.format(f'<RetrievePropertiesEx xmlns="{VIM}">{inner}</RetrievePropertiesEx>'
                           ).encode()
