"""Import-Module and Out-String: the utility cmdlets operators' scripts lean on."""

from __future__ import annotations

from typing import Any

from psrpcore.types import ErrorCategory, PSObject

from simfarm.powershell import errors
from simfarm.powershell.cmdlet import Cmdlet, Invocation, Param

_NS = "Microsoft.PowerShell.Commands."
MODULES = (
    "WebAdministration",
    "Microsoft.PowerShell.Management",
    "Microsoft.PowerShell.Utility",
    "CimCmdlets",
)

# Column layouts of the default table views for the types the simulated cmdlets write.
_VIEWS: dict[str, tuple[tuple[str, int], ...]] = {
    "System.ServiceProcess.ServiceController": (("Status", 8), ("Name", 18), ("DisplayName", 38)),
    "System.Diagnostics.Process": (
        ("Handles", 7),
        ("NPM(K)", 6),
        ("PM(K)", 8),
        ("WS(K)", 10),
        ("CPU(s)", 10),
        ("Id", 6),
        ("SI", 3),
        ("ProcessName", 0),
    ),
}
_PROCESS_COLUMNS = {"NPM(K)": "NPM", "PM(K)": "PM", "WS(K)": "WS", "CPU(s)": "CPU"}


async def import_module(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    for name in bound.get("Name", []):
        if name.lower() in (m.lower() for m in MODULES):
            inv.node.record("module_imported", module=name)
            continue
        message = (
            f"The specified module '{name}' was not loaded because no valid module file was found in any "
            "module "
            "directory."
        )
        exc = errors.exception("FileNotFoundException", message)
        inv.error(
            errors.record(
                exc,
                "Modules_ModuleNotFound",
                ErrorCategory.ResourceUnavailable,
                name,
                command=inv.type_name,
                activity=inv.cmdlet.name,
            )
        )


async def out_string(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    items = list(input)
    if "InputObject" in bound:
        value = bound["InputObject"]
        items += value if isinstance(value, list) else [value]
    lines = format_table(items)
    if bound.get("Stream"):
        for line in lines:
            inv.write(line)
    else:
        inv.write("\r\n".join(lines) + "\r\n")


def format_table(items: list[Any]) -> list[str]:
    """The console rendering of `items`: default table views by type, Format-List for the rest."""
    lines: list[str] = []
    current: str | None = None
    for item in items:
        if not isinstance(item, PSObject):
            current = None
            lines.append("" if item is None else str(item))
            continue
        type_name = item.PSObject.type_names[0] if item.PSObject.type_names else ""
        view = _VIEWS.get(type_name)
        if view is None:
            current = None
            lines.append("")
            props = item.PSObject.extended_properties + item.PSObject.adapted_properties
            width = max((len(p.name) for p in props), default=0)
            lines += [f"{p.name.ljust(width)} : {_cell(p.get_value(item))}" for p in props]
            continue
        if current != type_name:
            current = type_name
            lines += ["", _row([(h, w) for h, w in view]), _row([("-" * len(h), w) for h, w in view])]
        lines.append(_row([(_cell(getattr(item, _PROCESS_COLUMNS.get(h, h), "")), w) for h, w in view]))
    return [*lines, "", ""]


def _row(cells: list[tuple[str, int]]) -> str:
    return " ".join(text.ljust(width) if width else text for text, width in cells).rstrip()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "{" + ", ".join(_cell(v) for v in value) + "}"
    name = getattr(value, "name", None)
    if isinstance(name, str) and hasattr(value, "value"):
        return name  # a .NET enum shows its name
    return str(value)


async def invoke_expression(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    for value in await inv.run_script(bound["Command"], []):
        inv.write(value)


async def out_null(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    """Discards its input."""


CMDLETS = (
    Cmdlet(
        "Import-Module",
        _NS + "ImportModuleCommand",
        (Param("Name", "strings", position=0, mandatory=True), Param("Force", "switch")),
        import_module,
    ),
    Cmdlet(
        "Out-String",
        _NS + "OutStringCommand",
        (Param("InputObject", "any"), Param("Stream", "switch"), Param("Width", "int")),
        out_string,
    ),
    Cmdlet(
        "Invoke-Expression",
        _NS + "InvokeExpressionCommand",
        (Param("Command", "string", position=0, mandatory=True),),
        invoke_expression,
    ),
    Cmdlet("Out-Null", _NS + "OutNullCommand", (Param("InputObject", "any"),), out_null),
)
