""".NET exceptions and PowerShell ErrorRecords as a remote client receives them.

A client classifies errors by FullyQualifiedErrorId (`<ErrorId>,<command type>`), category, target
and the exception chain, so each is built the way PowerShell builds it: the exception's type names
carry the real .NET hierarchy and inner exceptions keep the Win32 text one level deeper.
"""

from __future__ import annotations

from typing import Any

from psrpcore.types import ErrorCategory, ErrorCategoryInfo, ErrorRecord, NETException, PSNoteProperty

from simfarm.scm import ServiceControllerError, ServiceTimeoutError, Win32Error

_SYSTEM = ("System.SystemException", "System.Exception", "System.Object")
_RUNTIME = ("System.Management.Automation.RuntimeException", *_SYSTEM)
_EXTERNAL = ("System.Runtime.InteropServices.ExternalException", *_SYSTEM)

HIERARCHY: dict[str, tuple[str, ...]] = {
    "ServiceCommandException": ("Microsoft.PowerShell.Commands.ServiceCommandException", *_SYSTEM),
    "ProcessCommandException": ("Microsoft.PowerShell.Commands.ProcessCommandException", *_SYSTEM),
    "InvalidOperationException": ("System.InvalidOperationException", *_SYSTEM),
    "Win32Exception": ("System.ComponentModel.Win32Exception", *_EXTERNAL),
    "COMException": ("System.Runtime.InteropServices.COMException", *_EXTERNAL),
    "TimeoutException": ("System.ServiceProcess.TimeoutException", *_SYSTEM),
    "CommandNotFoundException": ("System.Management.Automation.CommandNotFoundException", *_RUNTIME),
    "ParseException": ("System.Management.Automation.ParseException", *_RUNTIME),
    "ParameterBindingException": ("System.Management.Automation.ParameterBindingException", *_RUNTIME),
    "ArgumentException": ("System.ArgumentException", *_SYSTEM),
    "CimException": ("Microsoft.Management.Infrastructure.CimException", "System.Exception", "System.Object"),
    "FileNotFoundException": ("System.IO.FileNotFoundException", "System.IO.IOException", *_SYSTEM),
    "ItemNotFoundException": (
        "System.Management.Automation.ItemNotFoundException",
        "System.Management.Automation.SessionStateException",
        *_RUNTIME,
    ),
}

# Exception.HResult values .NET assigns to these types.
_HRESULTS = {
    "InvalidOperationException": -2146233079,
    "Win32Exception": -2147467259,
    "TimeoutException": ServiceTimeoutError.HRESULT,
    "CommandNotFoundException": -2146233087,
    "ParseException": -2146233087,
    "ParameterBindingException": -2146233087,
    "ServiceCommandException": -2146233087,
    "ProcessCommandException": -2146233087,
    "ArgumentException": -2147024809,
}


def exception(
    kind: str, message: str, *, inner: NETException | None = None, hresult: int | None = None, **extra: Any
) -> NETException:
    """A .NET exception of type `kind` (a HIERARCHY key), with extra properties such as NativeErrorCode."""
    exc = NETException(Message=message, HResult=hresult if hresult is not None else _HRESULTS.get(kind))
    exc.PSObject.type_names = list(HIERARCHY[kind])
    exc.PSObject.to_string = f"{HIERARCHY[kind][0]}: {message}"
    if inner is not None:
        exc.InnerException = inner
    # Properties of the derived .NET type (NativeErrorCode, ServiceName...) are adapted, like Message.
    for name, value in extra.items():
        exc.PSObject.adapted_properties.append(PSNoteProperty(name, value))
    return exc


def win32(err: Win32Error) -> NETException:
    return exception("Win32Exception", err.message, NativeErrorCode=err.code)


def from_controller(err: ServiceControllerError | ServiceTimeoutError | Win32Error) -> NETException:
    """The exception ServiceController threw, as the cmdlet's inner exception."""
    if isinstance(err, ServiceControllerError):
        return exception("InvalidOperationException", err.message, inner=win32(err.inner))
    if isinstance(err, ServiceTimeoutError):
        return exception("TimeoutException", err.message)
    return win32(err)


class _CategoryInfo(ErrorCategoryInfo):
    """ErrorCategoryInfo whose text is PowerShell's GetMessage(), which remoting sends as
    ErrorCategory_Message (pypsrp's `ErrorRecord.message`): `{Category}: ({TargetName}:{TargetType})
    [{Activity}], {Reason}` per ErrorCategoryStrings.resx. psrpcore's own rendering drops the colon."""

    def __str__(self) -> str:
        return (
            f"{self.Category.name}: ({_ellipsize(self.TargetName)}:{_ellipsize(self.TargetType)}) "
            f"[{_ellipsize(self.Activity)}], {self.Reason or ''}"
        )


def _ellipsize(text: str | None) -> str:
    # Windows PowerShell 5.1's ErrorCategoryInfo.Ellipsize; the reason (an exception type) is kept whole.
    text = text or ""
    return text if len(text) <= 40 else f"{text[:15]}...{text[-15:]}"


def record(
    exc: NETException,
    error_id: str,
    category: ErrorCategory,
    target: Any,
    *,
    command: str | None = None,
    activity: str = "",
    target_type: str | None = None,
) -> ErrorRecord:
    """An ErrorRecord; `command` is the cmdlet's .NET type, which completes the FullyQualifiedErrorId."""
    if target_type is None:
        target_type = _type_name(target)
    info = _CategoryInfo(
        Category=category,
        Activity=activity,
        Reason=exc.PSObject.type_names[0].rsplit(".", 1)[-1],
        TargetName="" if target is None else str(target),
        TargetType=target_type,
    )
    return ErrorRecord(
        Exception=exc,
        CategoryInfo=info,
        TargetObject=target,
        FullyQualifiedErrorId=f"{error_id},{command}" if command else error_id,
    )


def _type_name(target: Any) -> str:
    if target is None:
        return ""
    if isinstance(target, str):
        return "String"
    if isinstance(target, int):
        return "Int32"
    names = getattr(getattr(target, "PSObject", None), "type_names", None)
    return str(names[0]).rsplit(".", 1)[-1] if names else type(target).__name__


def command_not_found(name: str) -> ErrorRecord:
    message = (
        f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable "
        "program. Check the spelling of the name, or if a path was included, verify that the path is "
        "correct and try again."
    )
    exc = exception("CommandNotFoundException", message, CommandName=name)
    return record(exc, "CommandNotFoundException", ErrorCategory.ObjectNotFound, name)


def scripts_not_allowed(text: str) -> ErrorRecord:
    """What a NoLanguage runspace (a JEA endpoint) answers to any script text."""
    message = "The syntax is not supported by this runspace. This might be because it is in no-language mode."
    return record(exception("ParseException", message), "ScriptsNotAllowed", ErrorCategory.ParserError, text)


def parse_error(error_id: str, message: str, text: str) -> ErrorRecord:
    return record(exception("ParseException", message), error_id, ErrorCategory.ParserError, text)


def binding_error(error_id: str, message: str, command: str, activity: str) -> ErrorRecord:
    exc = exception("ParameterBindingException", message)
    return record(exc, error_id, ErrorCategory.InvalidArgument, None, command=command, activity=activity)
