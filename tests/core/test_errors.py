"""Error classification from what pypsrp deserializes: structured data first, texts as fallback."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

from orchestrator.remote.errors import classify_exception, classify_record


@dataclass
class Obj:
    """The shape of pypsrp's GenericComplexObject: properties in adapted/extended bags."""

    adapted_properties: dict[str, Any] = field(default_factory=dict)
    extended_properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class Record:
    fq_error: str
    exception: Any = None
    message: str = ""
    target_name: str | None = None


def chain(*layers: dict[str, Any]) -> Obj:
    inner: Obj | None = None
    for props in reversed(layers):
        inner = Obj(adapted_properties={**props, **({"InnerException": inner} if inner else {})})
    assert inner is not None
    return inner


@pytest.mark.parametrize(
    ("fqid", "layers", "kind", "code"),
    [
        (
            "NoServiceFoundForGivenName,Microsoft.PowerShell.Commands.GetServiceCommand",
            [{"Message": "x"}],
            "not_found",
            None,
        ),
        (
            "ServiceHasDependentServices,Microsoft.PowerShell.Commands.StopServiceCommand",
            [{"Message": "x"}],
            "dependent_services",
            None,
        ),
        (
            "CouldNotStopService,Microsoft.PowerShell.Commands.StopServiceCommand",
            [
                {"Message": "Service 'W3SVC' cannot be stopped"},
                {"Message": "Cannot stop"},
                {"Message": "busy", "NativeErrorCode": 1061},
            ],
            "cannot_accept_control",
            1061,
        ),
        (
            "CouldNotStopService,Microsoft.PowerShell.Commands.StopServiceCommand",
            [{"Message": "x"}, {"Message": "Access is denied", "HResult": -2147467259}],
            "access_denied",
            5,
        ),
        (
            "CouldNotStartService,Microsoft.PowerShell.Commands.StartServiceCommand",
            [{"Message": "x"}, {"Message": "y", "HResult": 0x8007041D}],
            "timed_out",
            1053,
        ),
        (
            "CouldNotStartService,Microsoft.PowerShell.Commands.StartServiceCommand",
            [{"Message": "x"}, {"NativeErrorCode": 1058}],
            "disabled",
            1058,
        ),
        (
            "CouldNotStopService,Microsoft.PowerShell.Commands.StopServiceCommand",
            [{"Message": "x"}, {"Message": "y", "HResult": -2147023835}],  # 0x80070425 as signed Int32
            "cannot_accept_control",
            1061,
        ),
        ("SomethingElse,X", [{"Message": "odd"}], "remote", None),
    ],
)
def test_error_records(fqid: str, layers: list[dict[str, Any]], kind: str, code: int | None) -> None:
    info = classify_record(Record(fq_error=fqid, exception=chain(*layers), target_name="W3SVC"))
    assert info.kind == kind
    assert info.code == code
    assert info.fqid == fqid
    assert info.target == "W3SVC"
    assert info.message == layers[0].get("Message", "")


def test_win32_text_fallback_when_the_code_was_not_serialized() -> None:
    exc = chain(
        {"Message": "Service 'W3SVC' cannot be stopped"},
        {"Message": "The service cannot accept control messages at this time."},
    )
    info = classify_record(Record(fq_error="CouldNotStopService,X", exception=exc))
    assert (info.kind, info.code) == ("cannot_accept_control", 1061)


def test_transport_and_auth_exceptions() -> None:
    assert classify_exception(AuthenticationError("no")).kind == "auth"
    assert classify_exception(WinRMTransportError("http", 401, "")).kind == "auth"
    refused = classify_exception(requests.exceptions.ConnectionError("Connection refused\n at 0x7f"))
    assert refused.kind == "transport" and "\n" not in refused.message
    quota = classify_exception(WSManFaultError(0x803381A5, "m", "too many shells", "", "", ""))
    assert (quota.kind, quota.code) == ("quota", 0x803381A5)
    assert classify_exception(WSManFaultError(2150858793, "m", "timed out", "", "", "")).kind == "transport"
    assert classify_exception(TimeoutError()).kind == "transport"
