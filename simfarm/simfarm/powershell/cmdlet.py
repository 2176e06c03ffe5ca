"""Cmdlet declarations, PowerShell's parameter binding, and the per-invocation error policy.

Binding follows PowerShell: names are case-insensitive and may be unambiguous prefixes or aliases;
binding failures are terminating (ParameterBindingException); `-ErrorAction Stop` turns the cmdlet's
non-terminating errors into a terminating one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from psrpcore.types import ErrorCategory, ErrorRecord

from simfarm.powershell import errors
from simfarm.powershell.pipeline import PipelineFailed, PipelineSink

if TYPE_CHECKING:
    from simfarm.node import SimNode

Kind = Literal["switch", "string", "strings", "int", "ints", "hashtable", "any"]

# A parameter written without a value in script text (`-Force`); the binder decides what it means.
NO_VALUE: Any = object()


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    aliases: tuple[str, ...] = ()
    position: int | None = None
    mandatory: bool = False
    choices: tuple[str, ...] = ()
    # The .NET type named in conversion errors.
    type_name: str = ""


_PREFERENCES = ("Continue", "Ignore", "Inquire", "SilentlyContinue", "Stop", "Suspend")
_PREFERENCE_TYPE = "System.Management.Automation.ActionPreference"
COMMON = (
    Param("Verbose", "switch", ("vb",)),
    Param("Debug", "switch", ("db",)),
    Param("ErrorAction", "string", ("ea",), choices=_PREFERENCES, type_name=_PREFERENCE_TYPE),
    Param("WarningAction", "string", ("wa",), choices=_PREFERENCES, type_name=_PREFERENCE_TYPE),
    Param("InformationAction", "string", ("infa",), choices=_PREFERENCES, type_name=_PREFERENCE_TYPE),
    Param("ErrorVariable", "string", ("ev",)),
    Param("WarningVariable", "string", ("wv",)),
    Param("InformationVariable", "string", ("iv",)),
    Param("OutVariable", "string", ("ov",)),
    Param("OutBuffer", "int", ("ob",)),
    Param("PipelineVariable", "string", ("pv",)),
)

Body = Callable[["Invocation", dict[str, Any], list[Any]], Awaitable[None]]
# Runs script text in the caller's session (Invoke-Expression): (text, input) -> output.
ScriptRunner = Callable[[str, list[Any]], Awaitable[list[Any]]]


@dataclass(frozen=True)
class Cmdlet:
    name: str
    type_name: str  # the implementing .NET class, the suffix of FullyQualifiedErrorIds
    params: tuple[Param, ...]
    body: Body
    # Whether pipeline input satisfies a mandatory parameter (ValueFromPipeline).
    takes_input: bool = False

    def bind(self, args: Sequence[tuple[str | None, Any]], has_input: bool) -> dict[str, Any]:
        return _Binder(self).bind(args, has_input)

    def binding_error(self, error_id: str, message: str) -> PipelineFailed:
        return PipelineFailed(errors.binding_error(error_id, message, self.type_name, self.name))


@dataclass
class Invocation:
    """One cmdlet running: where its output and errors go, under its -ErrorAction."""

    node: SimNode
    cmdlet: Cmdlet
    sink: PipelineSink
    run_script: ScriptRunner
    error_action: str = "Continue"
    warning_action: str = "Continue"
    output: list[Any] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        return self.cmdlet.type_name

    def write(self, value: Any) -> None:
        self.output.append(value)

    def error(self, rec: ErrorRecord) -> None:
        if self.error_action == "Stop":
            raise PipelineFailed(rec)
        if self.error_action not in ("SilentlyContinue", "Ignore"):
            self.sink.write_error(rec)

    def warning(self, message: str) -> None:
        if self.warning_action == "Stop":
            raise PipelineFailed(
                errors.record(
                    errors.exception("InvalidOperationException", message),
                    "ActionPreferenceStop",
                    ErrorCategory.OperationStopped,
                    None,
                )
            )
        if self.warning_action not in ("SilentlyContinue", "Ignore"):
            self.sink.write_warning(message)


class _Binder:
    def __init__(self, cmdlet: Cmdlet) -> None:
        self.cmdlet = cmdlet
        self.params = (*cmdlet.params, *COMMON)

    def resolve(self, given: str) -> Param:
        key = given.lstrip("-").lower()
        for p in self.params:
            if key == p.name.lower() or key in (a.lower() for a in p.aliases):
                return p
        matches = [p for p in self.params if p.name.lower().startswith(key)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = " ".join(f"-{p.name}" for p in matches)
            raise self.cmdlet.binding_error(
                "AmbiguousParameter",
                f"Parameter cannot be processed because the parameter name '{given}' is ambiguous. "
                f"Possible matches include: {names}.",
            )
        raise self.cmdlet.binding_error(
            "NamedParameterNotFound", f"A parameter cannot be found that matches parameter name '{given}'."
        )

    def bind(self, args: Sequence[tuple[str | None, Any]], has_input: bool) -> dict[str, Any]:
        bound: dict[str, Any] = {}
        positional: list[Any] = []
        items = list(args)
        i = 0
        while i < len(items):
            name, value = items[i]
            i += 1
            if name is None:
                positional.append(value)
                continue
            param = self.resolve(name)
            if value is NO_VALUE and param.kind != "switch":
                if i < len(items) and items[i][0] is None:
                    value = items[i][1]
                    i += 1
                else:
                    raise self.cmdlet.binding_error(
                        "MissingArgument",
                        f"Missing an argument for parameter '{param.name}'. Specify a parameter of type "
                        f"'{_dotnet_type(param)}' and try again.",
                    )
            if param.name in bound:
                raise self.cmdlet.binding_error(
                    "ParameterAlreadyBound",
                    f"Cannot bind parameter because parameter '{param.name}' is specified more than once. To "
                    "provide multiple values to parameters that can accept multiple values, use the array "
                    'syntax. For example, "-parameter value1,value2,value3".',
                )
            bound[param.name] = self.convert(param, True if value is NO_VALUE else value)
        slots = sorted(
            (p for p in self.cmdlet.params if p.position is not None), key=lambda p: p.position or 0
        )
        for value in positional:
            free = [p for p in slots if p.name not in bound]
            if not free:
                raise self.cmdlet.binding_error(
                    "PositionalParameterNotFound",
                    f"A positional parameter cannot be found that accepts argument '{_display(value)}'.",
                )
            bound[free[0].name] = self.convert(free[0], value)
        missing = [p.name for p in self.cmdlet.params if p.mandatory and p.name not in bound]
        if missing and not (has_input and self.cmdlet.takes_input):
            raise self.cmdlet.binding_error(
                "MissingMandatoryParameter",
                "Cannot process command because of one or more missing mandatory parameters: "
                f"{' '.join(missing)}.",
            )
        return bound

    def convert(self, param: Param, value: Any) -> Any:
        try:
            converted = _convert(param.kind, value)
        except (TypeError, ValueError):
            raise self.cmdlet.binding_error(
                "CannotConvertArgumentNoMessage",
                f"Cannot bind parameter '{param.name}'. Cannot convert value \"{_display(value)}\" to type "
                f'"{_dotnet_type(param)}". Error: "Input string was not in a correct format."',
            ) from None
        if param.choices:
            match = next((c for c in param.choices if c.lower() == str(converted).lower()), None)
            if match is None:
                if param.type_name:
                    raise self.cmdlet.binding_error(
                        "CannotConvertArgumentNoMessage",
                        f"Cannot bind parameter '{param.name}'. Cannot convert value \"{converted}\" to type "
                        f'"{param.type_name}". Error: "Unable to match the identifier name {converted} to a '
                        "valid enumerator name. Specify one of the following enumerator names and try "
                        f'again:\r\n{", ".join(param.choices)}"',
                    )
                raise self.cmdlet.binding_error(
                    "ParameterArgumentValidationError",
                    f"Cannot validate argument on parameter '{param.name}'. "
                    f'The argument "{converted}" does not '
                    f'belong to the set "{",".join(param.choices)}" specified by the ValidateSet attribute. '
                    "Supply an argument that is in the set and then try the command again.",
                )
            converted = match
        return converted


def _convert(kind: Kind, value: Any) -> Any:
    if kind == "switch":
        return bool(value)
    if kind == "string":
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        return str(value)
    if kind == "strings":
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if kind == "int":
        if isinstance(value, (bool, list)):
            raise TypeError(value)
        return int(str(value), 0) if isinstance(value, str) and value.lower().startswith("0x") else int(value)
    if kind == "ints":
        return [_convert("int", v) for v in value] if isinstance(value, list) else [_convert("int", value)]
    if kind == "hashtable":
        if not isinstance(value, dict):
            raise TypeError(value)
        return value
    return value


def _dotnet_type(param: Param) -> str:
    if param.type_name:
        return param.type_name
    return {
        "string": "System.String",
        "strings": "System.String[]",
        "int": "System.Int32",
        "ints": "System.Int32[]",
        "hashtable": "System.Collections.IDictionary",
        "switch": "System.Management.Automation.SwitchParameter",
    }.get(param.kind, "System.Object")


def _display(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)
