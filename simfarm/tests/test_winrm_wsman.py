"""The pure WS-Management and message-encryption pieces, checked against pypsrp's own parsers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import spnego
from pypsrp.wsman import OptionSet, SelectorSet, WSMan

from simfarm import auth, wsman


@pytest.mark.parametrize(
    ("text", "seconds"), [("PT20S", 20.0), ("PT1M30.5S", 90.5), ("P1DT2H", 93600.0), ("PT0.250S", 0.25)]
)
def test_durations(text, seconds):
    assert wsman.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "20", "PTS"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        wsman.parse_duration(text)


def test_parses_the_headers_pypsrp_sends():
    client = WSMan("127.0.50.1", ssl=False, auth="ntlm", username="u", password="p", operation_timeout=7)
    selectors = SelectorSet()
    selectors.add_option("ShellId", "ABC")
    options = OptionSet()
    options.add_option("WINRS_SKIP_CMD_SHELL", "False")
    message_id, header = client._create_header(wsman.RECEIVE, wsman.CMD_RESOURCE, options, selectors)
    envelope = ET.Element("{http://www.w3.org/2003/05/soap-envelope}Envelope")
    envelope.append(header)
    body = ET.SubElement(envelope, "{http://www.w3.org/2003/05/soap-envelope}Body")
    ET.SubElement(body, "{http://schemas.microsoft.com/wbem/wsman/1/windows/shell}Receive")

    request = wsman.parse_request(ET.tostring(envelope))
    assert request.action == wsman.RECEIVE
    assert request.resource_uri == wsman.CMD_RESOURCE
    assert request.message_id == f"uuid:{message_id}"
    assert request.shell_id == "ABC"
    assert request.options == {"WINRS_SKIP_CMD_SHELL": "False"}
    assert request.operation_timeout_s == 7.0
    assert request.max_envelope_size == 153600
    assert request.body is not None and request.body.tag.endswith("Receive")


def test_malformed_xml_is_a_wsman_fault():
    with pytest.raises(wsman.WSManFault) as err:
        wsman.parse_request(b"<not-soap")
    assert err.value.wsman_code == 0x8033801A


def test_fault_reads_back_through_pypsrp():
    xml = wsman.fault_envelope(wsman.timed_out(), "uuid:1", "127.0.50.1")
    parsed = WSMan._parse_wsman_fault(xml.decode())
    assert parsed.code == 2150858793
    assert parsed.machine == "127.0.50.1"
    assert parsed.reason == wsman.timed_out().message
    assert parsed.reason.endswith("within the time specified in OperationTimeout.")


def test_seal_and_unseal_round_trip(tmp_path):
    accounts = auth.AccountFile(tmp_path / "users", "alice", "Pw-1", ["WEB-001"])
    client = spnego.client("alice", "Pw-1", protocol="ntlm", options=spnego.NegotiateOptions.wrapping_winrm)
    with accounts.active():
        server = spnego.server(protocol="negotiate", options=spnego.NegotiateOptions.wrapping_winrm)
        token = server.step(client.step())
        server.step(client.step(token))
    assert server.complete

    content_type, body = auth.seal(server, b"<s:Envelope/>")
    assert content_type.startswith("multipart/encrypted;")
    header_len = int.from_bytes(body.split(b"application/octet-stream\r\n", 1)[1][:4], "little")
    wrapped = body.split(b"application/octet-stream\r\n", 1)[1][4:].removesuffix(
        b"--Encrypted Boundary--\r\n"
    )
    assert client.unwrap_winrm(wrapped[:header_len], wrapped[header_len:]) == b"<s:Envelope/>"

    header, data, _ = client.wrap_winrm(b"<request/>")
    framed = (
        b"--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=10\r\n--Encrypted Boundary\r\n"
        b"\tContent-Type: application/octet-stream\r\n"
        + len(header).to_bytes(4, "little")
        + header
        + data
        + b"--Encrypted Boundary--\r\n"
    )
    assert auth.unseal(server, framed) == b"<request/>"
    with pytest.raises(auth.SealError):
        auth.unseal(server, framed.replace(b"Length=10", b"Length=11"))


def test_account_file_refuses_a_password_it_cannot_store(tmp_path):
    with pytest.raises(ValueError):
        auth.AccountFile(tmp_path / "users", "alice", "a:b", [])
