"""WS-Management SOAP as a Windows WinRM service speaks it: parse requests, build responses and faults.

Pure functions over bytes and ElementTree; no I/O. Fault codes, subcodes and texts are the ones Windows
sends (captures quoted in docs/simulated-farm-transport.md), because clients branch on them: pypsrp, for
one, retries a Receive on code 2150858793 and treats 0x8033805B as a dead shell.
"""

from __future__ import annotations

import base64
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "cfg": "http://schemas.microsoft.com/wbem/wsman/1/config",
    "xml": "http://www.w3.org/XML/1998/namespace",
}
for _prefix, _uri in NS.items():
    if _prefix != "xml":
        ET.register_namespace(_prefix, _uri)

_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"

CREATE = _TRANSFER + "Create"
DELETE = _TRANSFER + "Delete"
GET = _TRANSFER + "Get"
COMMAND = _SHELL + "Command"
SEND = _SHELL + "Send"
RECEIVE = _SHELL + "Receive"
SIGNAL = _SHELL + "Signal"
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

CMD_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
SHELL_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CONFIG_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/config"
POWERSHELL_PREFIX = "http://schemas.microsoft.com/powershell/"

STATE_DONE = _SHELL + "CommandState/Done"
STATE_RUNNING = _SHELL + "CommandState/Running"

SIGNAL_CTRL_C = _SHELL + "signal/ctrl_c"
SIGNAL_TERMINATE = _SHELL + "signal/terminate"
# MS-PSRP spells the stop code "crtl_c"; PowerShell clients and pypsrp send "ctrl_c". Both stop.
SIGNAL_PS_STOP = frozenset({"powershell/signal/crtl_c", "powershell/signal/ctrl_c"})

# Bytes a ReceiveResponse needs besides its base64 stream data, headers included, with room to spare.
RESPONSE_OVERHEAD = 2048

_ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d*)?)S)?)?$")


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


# --- faults -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WSManFault(Exception):
    """A SOAP fault with the Windows WSManFault detail; answered with HTTP 500 as Windows does."""

    code: str  # s:Sender or s:Receiver
    subcode: str  # e.g. w:TimedOut
    wsman_code: int
    message: str
    reason: str = ""  # the s:Reason text when Windows words it apart from the detail message
    detail: str | None = None  # w:FaultDetail URI

    def __str__(self) -> str:
        return f"{self.subcode} ({self.wsman_code}): {self.message}"


_INVALID_SELECTORS = (
    "The WS-Management service cannot process the request because the request contained invalid "
    "selectors for the resource."
)
_UNEXPECTED_SELECTORS = "http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors"


def timed_out() -> WSManFault:
    return WSManFault(
        "s:Receiver",
        "w:TimedOut",
        2150858793,
        "The WS-Management service cannot complete the operation within the time specified in "
        "OperationTimeout.",
    )


def shell_not_found(shell_id: str) -> WSManFault:
    return WSManFault(
        "s:Sender",
        "w:InvalidSelectors",
        2150858843,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was "
        "not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no "
        "longer exists on the server. Provide the correct ShellId or create a new shell and retry the "
        "operation.",
        reason=_INVALID_SELECTORS,
        detail=_UNEXPECTED_SELECTORS,
    )


def command_not_found() -> WSManFault:
    return WSManFault(
        "s:Sender",
        "w:InvalidSelectors",
        2150858843,
        "The Windows Remote Shell received a request to perform an operation on a command identifier "
        "that does not exist. Either the command has completed execution or the client specified an "
        "invalid command identifier.",
        reason=_INVALID_SELECTORS,
        detail=_UNEXPECTED_SELECTORS,
    )


def max_shells_exceeded(limit: int) -> WSManFault:
    return WSManFault(
        "s:Receiver",
        "w:QuotaLimit",
        0x803381A5,
        f"The WS-Management service cannot process the request. This user is allowed a maximum number of "
        f"{limit} concurrent shells, which has been exceeded. Close existing shells or raise the quota for "
        "this user.",
    )


def max_operations_exceeded(limit: int) -> WSManFault:
    return WSManFault(
        "s:Receiver",
        "w:QuotaLimit",
        0x803381A6,
        f"The WS-Management service cannot process the request. This user is allowed a maximum number of "
        f"{limit} concurrent operations, which has been exceeded. Close existing operations for this user, "
        "or raise the quota for this user.",
    )


def envelope_too_large() -> WSManFault:
    return WSManFault(
        "s:Sender",
        "w:EncodingLimit",
        0x80338111,
        "The WinRM client sent a request to the remote WS-Management service and was notified that the "
        "request size exceeded the configured MaxEnvelopeSize quota.",
        detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/MaxEnvelopeSize",
    )


def resource_not_found(resource_uri: str) -> WSManFault:
    return WSManFault(
        "s:Sender",
        "w:DestinationUnreachable",
        0x80338000,
        f"The WS-Management service cannot process the request. The resource URI ({resource_uri}) was not "
        "found in the WS-Management catalog. The catalog contains the metadata that describes resources, "
        "or logical endpoints.",
    )


def action_not_supported(action: str) -> WSManFault:
    return WSManFault(
        "s:Sender",
        "a:ActionNotSupported",
        0x80338116,
        f"The WS-Management service cannot process the request. The action {action} is not supported by "
        "the service.",
    )


def invalid_xml() -> WSManFault:
    return WSManFault(
        "s:Sender",
        "w:SchemaValidationError",
        0x8033801A,
        "WinRM cannot process the request because the input XML contains a syntax error.",
    )


def operation_aborted() -> WSManFault:
    """A Receive still waiting when its shell or command goes away."""
    return WSManFault(
        "s:Receiver",
        "w:InternalError",
        995,
        "The I/O operation has been aborted because of either a thread exit or an application request.",
    )


# --- requests ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    action: str
    resource_uri: str
    message_id: str
    selectors: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    operation_timeout_s: float | None = None
    max_envelope_size: int | None = None
    body: ET.Element | None = None  # the single child of s:Body, when there is one

    @property
    def shell_id(self) -> str | None:
        return self.selectors.get("ShellId")


def parse_duration(text: str) -> float:
    """xs:duration as WS-Man uses it (PT20S, PT1M30.5S, P1DT2H) in seconds."""
    m = _DURATION.match(text.strip())
    if m is None or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r}")
    days, hours, minutes, seconds = m.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def parse_request(data: bytes) -> Request:
    """Read the WS-Addressing/WS-Management headers and the body of a SOAP envelope."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        raise invalid_xml() from None
    header = root.find("s:Header", NS)
    if root.tag != _q("s", "Envelope") or header is None:
        raise invalid_xml()

    def text(path: str) -> str:
        el = header.find(path, NS)
        return (el.text or "").strip() if el is not None else ""

    timeout_text = text("w:OperationTimeout")
    try:
        timeout = parse_duration(timeout_text) if timeout_text else None
    except ValueError:
        raise invalid_xml() from None
    envelope_text = text("w:MaxEnvelopeSize")
    body = root.find("s:Body", NS)
    children = list(body) if body is not None else []
    return Request(
        action=text("a:Action"),
        resource_uri=text("w:ResourceURI"),
        message_id=text("a:MessageID"),
        selectors=_named_values(header, "w:SelectorSet/w:Selector"),
        options=_named_values(header, "w:OptionSet/w:Option"),
        operation_timeout_s=timeout,
        max_envelope_size=int(envelope_text) if envelope_text.isdigit() else None,
        body=children[0] if children else None,
    )


def _named_values(header: ET.Element, path: str) -> dict[str, str]:
    return {el.get("Name", ""): (el.text or "").strip() for el in header.findall(path, NS)}


# --- responses --------------------------------------------------------------------------------------


def envelope(action: str, relates_to: str, body: Iterable[ET.Element] = ()) -> bytes:
    root = ET.Element(_q("s", "Envelope"), {_q("xml", "lang"): "en-US"})
    header = ET.SubElement(root, _q("s", "Header"))
    ET.SubElement(header, _q("a", "Action")).text = action
    ET.SubElement(header, _q("a", "MessageID")).text = f"uuid:{str(uuid.uuid4()).upper()}"
    ET.SubElement(header, _q("a", "To")).text = _ANONYMOUS
    ET.SubElement(header, _q("a", "RelatesTo")).text = relates_to
    body_el = ET.SubElement(root, _q("s", "Body"))
    body_el.extend(body)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return data


def response(request: Request, body: Iterable[ET.Element] = ()) -> bytes:
    return envelope(request.action + "Response", request.message_id, body)


def fault_envelope(fault: WSManFault, relates_to: str, machine: str) -> bytes:
    el = ET.Element(_q("s", "Fault"))
    code = ET.SubElement(el, _q("s", "Code"))
    ET.SubElement(code, _q("s", "Value")).text = fault.code
    sub = ET.SubElement(code, _q("s", "Subcode"))
    ET.SubElement(sub, _q("s", "Value")).text = fault.subcode
    reason = ET.SubElement(el, _q("s", "Reason"))
    ET.SubElement(reason, _q("s", "Text"), {_q("xml", "lang"): "en-US"}).text = fault.reason or fault.message
    detail = ET.SubElement(el, _q("s", "Detail"))
    if fault.detail:
        ET.SubElement(detail, _q("w", "FaultDetail")).text = fault.detail
    wsman_fault = ET.SubElement(
        detail, _q("f", "WSManFault"), {"Code": str(fault.wsman_code), "Machine": machine}
    )
    ET.SubElement(wsman_fault, _q("f", "Message")).text = fault.message
    return envelope(FAULT_ACTION, relates_to, [el])


@dataclass(frozen=True)
class ShellInfo:
    shell_id: str
    resource_uri: str
    owner: str
    client_ip: str
    input_streams: str
    output_streams: str
    idle_timeout_s: int
    run_time_s: int
    inactivity_s: int


def _shell_element(info: ShellInfo, state: str | None = None) -> ET.Element:
    shell = ET.Element(_q("rsp", "Shell"))
    fields = [
        ("ShellId", info.shell_id),
        ("ResourceUri", info.resource_uri),
        ("Owner", info.owner),
        ("ClientIP", info.client_ip),
        ("IdleTimeOut", f"PT{info.idle_timeout_s}.000S"),
        ("InputStreams", info.input_streams),
        ("OutputStreams", info.output_streams),
        ("ShellRunTime", f"P0DT0H0M{info.run_time_s}S"),
        ("ShellInactivity", f"P0DT0H0M{info.inactivity_s}S"),
    ]
    if state is not None:
        fields.insert(4, ("State", state))
    for name, value in fields:
        ET.SubElement(shell, _q("rsp", name)).text = value
    return shell


def created(request: Request, info: ShellInfo, endpoint_url: str) -> bytes:
    resource = ET.Element(_q("x", "ResourceCreated"))
    ET.SubElement(resource, _q("a", "Address")).text = endpoint_url
    params = ET.SubElement(resource, _q("a", "ReferenceParameters"))
    ET.SubElement(params, _q("w", "ResourceURI")).text = info.resource_uri
    selectors = ET.SubElement(params, _q("w", "SelectorSet"))
    ET.SubElement(selectors, _q("w", "Selector"), {"Name": "ShellId"}).text = info.shell_id
    return response(request, [resource, _shell_element(info)])


def shell_state(request: Request, info: ShellInfo, state: str) -> bytes:
    return response(request, [_shell_element(info, state)])


def command_started(request: Request, command_id: str) -> bytes:
    el = ET.Element(_q("rsp", "CommandResponse"))
    ET.SubElement(el, _q("rsp", "CommandId")).text = command_id
    return response(request, [el])


@dataclass(frozen=True)
class StreamChunk:
    name: str
    data: bytes
    end: bool = False


def received(
    request: Request,
    command_id: str | None,
    chunks: Iterable[StreamChunk],
    *,
    done: bool,
    exit_code: int | None = None,
) -> bytes:
    el = ET.Element(_q("rsp", "ReceiveResponse"))
    cid = {"CommandId": command_id} if command_id else {}
    for chunk in chunks:
        attrs = {"Name": chunk.name, **cid}
        if chunk.end:
            attrs["End"] = "true"
        ET.SubElement(el, _q("rsp", "Stream"), attrs).text = base64.b64encode(chunk.data).decode("ascii")
    if command_id:
        state = ET.SubElement(
            el, _q("rsp", "CommandState"), {**cid, "State": STATE_DONE if done else STATE_RUNNING}
        )
        if done and exit_code is not None:
            ET.SubElement(state, _q("rsp", "ExitCode")).text = str(exit_code)
    return response(request, [el])


def signalled(request: Request) -> bytes:
    return response(request, [ET.Element(_q("rsp", "SignalResponse"))])


def sent(request: Request) -> bytes:
    return response(request, [ET.Element(_q("rsp", "SendResponse"))])


def deleted(request: Request) -> bytes:
    return response(request)


def config(request: Request, max_envelope_size_kb: int, max_timeout_ms: int) -> bytes:
    el = ET.Element(_q("cfg", "Config"))
    ET.SubElement(el, _q("cfg", "MaxEnvelopeSizekb")).text = str(max_envelope_size_kb)
    ET.SubElement(el, _q("cfg", "MaxTimeoutms")).text = str(max_timeout_ms)
    return response(request, [el])
