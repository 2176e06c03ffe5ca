"""Classify what went wrong on a node from what WinRM and PowerShell told us.

The workflow decides by kind (keep waiting on 1061, fail fast on access denied, reconnect on
transport), so classification reads structured data first (FullyQualifiedErrorId, the Win32 code
in the inner exception chain, WS-Man fault codes) and message texts only as a fallback.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.results import ErrorInfo

# Win32 codes we act on (docs/windows-fidelity.md §2).
ACCESS_DENIED = 5
SERVICE_REQUEST_TIMEOUT = 1053
SERVICE_DISABLED = 1058
SERVICE_DOES_NOT_EXIST = 1060
SERVICE_CANNOT_ACCEPT_CTRL = 1061

_KIND_BY_CODE = {
    ACCESS_DENIED: "access_denied",
    SERVICE_REQUEST_TIMEOUT: "timed_out",
    SERVICE_DISABLED: "disabled",
    SERVICE_DOES_NOT_EXIST: "not_found",
    SERVICE_CANNOT_ACCEPT_CTRL: "cannot_accept_control",
}

# Fallback when a serializer dropped the native code: the Win32 message texts.
_CODE_BY_TEXT = (
    ("cannot accept control messages at this time", SERVICE_CANNOT_ACCEPT_CTRL),
    ("access is denied", ACCESS_DENIED),
    ("did not respond to the start or control request in a timely fashion", SERVICE_REQUEST_TIMEOUT),
    ("because it is disabled", SERVICE_DISABLED),
    ("does not exist as an installed service", SERVICE_DOES_NOT_EXIST),
)

_KIND_BY_ERROR_ID = {
    "NoServiceFoundForGivenName": "not_found",
    "CommandNotFoundException": "not_found",
    "ServiceHasDependentServices": "dependent_services",
    "ServiceHasDependentServicesNoForce": "dependent_services",
    "ServiceIsDependentOnNoForce": "dependent_services",
}

# WS-Man quota faults (docs/windows-fidelity.md §5).
_QUOTA_FAULTS = {0x803381A5, 0x803381A6, 0x80338111, *range(0x803381E4, 0x803381EA)}
WSMAN_TIMED_OUT = 2150858793


class RemoteError(Exception):
    """A classified failure of a remote call."""

    def __init__(self, info: ErrorInfo) -> None:
        self.info = info
        super().__init__(info.message)

    @property
    def kind(self) -> str:
        return self.info.kind


class CallTimedOut(RemoteError):
    """Our own per-call limit ran out (the pipeline was stopped); the node may simply be slow."""


def prop(obj: Any, name: str) -> Any:
    """A property of a deserialized PowerShell object, wherever pypsrp put it."""
    if obj is None:
        return None
    for bag in ("adapted_properties", "extended_properties"):
        props = getattr(obj, bag, None)
        if isinstance(props, dict) and name in props:
            return props[name]
    return getattr(obj, name, None)


def _exception_chain(exc: Any) -> list[Any]:
    chain: list[Any] = []
    while exc is not None and len(chain) < 8:
        chain.append(exc)
        exc = prop(exc, "InnerException")
    return chain


def _win32_code(chain: list[Any], texts: list[str]) -> int | None:
    for exc in chain:
        native = prop(exc, "NativeErrorCode")
        if isinstance(native, int) and native:
            return native
        hresult = prop(exc, "HResult")
        # HRESULT_FROM_WIN32: facility 7 carries the Win32 code in the low word (0x80070425 = 1061).
        # .NET serializes HResult as a signed Int32; masking works for either sign.
        if isinstance(hresult, int) and (hresult & 0xFFFF0000) == 0x80070000:
            return hresult & 0xFFFF
    joined = " ".join(texts).lower()
    for text, code in _CODE_BY_TEXT:
        if text in joined:
            return code
    return None


def classify_record(record: Any) -> ErrorInfo:
    """An ErrorRecord (pypsrp's deserialized object) as an ErrorInfo."""
    fqid = str(getattr(record, "fq_error", "") or "")
    chain = _exception_chain(getattr(record, "exception", None))
    texts = [str(prop(e, "Message") or "") for e in chain]
    message = texts[0] if texts and texts[0] else str(getattr(record, "message", "") or fqid)
    code = _win32_code(chain, texts)
    error_id = fqid.split(",", 1)[0]
    kind = _KIND_BY_ERROR_ID.get(error_id)
    if kind is None and code is not None:
        kind = _KIND_BY_CODE.get(code)
    if kind is None and any("TimeoutException" in str(prop(e, "ClassName") or "") for e in chain):
        kind = "timed_out"
    # ServiceCommandException names its service; the record's TargetName is the target object's
    # ToString, which for a ServiceController is only its type name.
    service = prop(chain[0], "ServiceName") if chain else None
    target = str(service) if service else (getattr(record, "target_name", None) or None)
    return ErrorInfo(kind=kind or "remote", message=message, code=code, fqid=fqid or None, target=target)


def classify_exception(exc: BaseException) -> ErrorInfo:
    """A Python exception raised by pypsrp/requests/spnego as an ErrorInfo."""
    from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

    if isinstance(exc, RemoteError):
        return exc.info
    if isinstance(exc, AuthenticationError) or type(exc).__module__.startswith("spnego"):
        return ErrorInfo(kind="auth", message=_one_line(exc))
    if isinstance(exc, WinRMTransportError):
        kind = "auth" if exc.code == 401 else "transport"
        return ErrorInfo(kind=kind, message=f"HTTP {exc.code} from WinRM", code=exc.code)
    if isinstance(exc, WSManFaultError):
        code = _int(exc.code)
        kind = "quota" if code in _QUOTA_FAULTS else "transport"
        return ErrorInfo(kind=kind, message=_one_line(exc.reason or exc), code=code)
    if isinstance(exc, TimeoutError):
        return ErrorInfo(kind="transport", message="remote call timed out")
    return ErrorInfo(kind="transport", message=_one_line(exc))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _one_line(value: object) -> str:
    # requests' connection errors embed object reprs with addresses; keep the operator's line short.
    text = re.sub(r"\s+", " ", str(value)).strip()
    return text[:400]
