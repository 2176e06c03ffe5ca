"""Get-CimInstance (Win32_Service, Win32_Process with a WQL -Filter) and Invoke-CimMethod
Win32_Process Create, which starts a process outside the WinRM shell."""

from __future__ import annotations

import re
from typing import Any

from psrpcore.types import ErrorCategory, PSObject

from simfarm.powershell import errors, objects
from simfarm.powershell.cmdlet import Cmdlet, Invocation, Param

_NS = "Microsoft.Management.Infrastructure.CimCmdlets."
# WBEM_E_INVALID_CLASS, WBEM_E_INVALID_QUERY, WBEM_E_INVALID_METHOD.
_INVALID_CLASS = (0x80041010, "Invalid class ", ErrorCategory.MetadataError)
_INVALID_QUERY = (0x80041017, "Invalid query ", ErrorCategory.InvalidArgument)
_INVALID_METHOD = (0x80041055, "Invalid method ", ErrorCategory.MetadataError)


class _CimError(Exception):
    def __init__(self, kind: tuple[int, str, ErrorCategory]) -> None:
        super().__init__(kind[1])
        self.kind = kind


def _fail(inv: Invocation, kind: tuple[int, str, ErrorCategory], target: Any) -> None:
    code, message, category = kind
    exc = errors.exception("CimException", message, hresult=code - (1 << 32), NativeErrorCode=code)
    inv.error(
        errors.record(
            exc, f"HRESULT 0x{code:x}", category, target, command=inv.type_name, activity=inv.cmdlet.name
        )
    )


_CONDITION = re.compile(
    r"""\s*(?P<prop>\w+)\s*(?P<op>=|<>|!=|\bLIKE\b)\s*(?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<num>-?\d+)|(?P<bool>TRUE|FALSE))\s*""",
    re.IGNORECASE,
)


def _matcher(wql: str) -> Any:
    """A predicate over property dicts for a WQL WHERE clause of comparisons joined by AND/OR."""
    alternatives = re.split(r"\s+OR\s+", wql.strip(), flags=re.IGNORECASE)
    clauses = []
    for alt in alternatives:
        terms = []
        for part in re.split(r"\s+AND\s+", alt, flags=re.IGNORECASE):
            m = _CONDITION.fullmatch(part)
            if m is None:
                raise _CimError(_INVALID_QUERY)
            value: Any = m["sq"] if m["sq"] is not None else m["dq"]
            if m["num"] is not None:
                value = int(m["num"])
            elif m["bool"] is not None:
                value = m["bool"].upper() == "TRUE"
            terms.append((m["prop"], m["op"].upper(), value))
        clauses.append(terms)

    def test(props: dict[str, Any]) -> bool:
        return any(all(_compare(props, *term) for term in terms) for terms in clauses)

    return test


def _compare(props: dict[str, Any], prop: str, op: str, value: Any) -> bool:
    actual = next((v for k, v in props.items() if k.lower() == prop.lower()), None)
    if isinstance(value, str) and isinstance(actual, str):
        if op == "LIKE":
            pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in value)
            return re.fullmatch(pattern, actual, re.IGNORECASE) is not None
        equal = actual.lower() == value.lower()
    else:
        equal = actual == value
    return equal if op == "=" else (not equal if op in ("<>", "!=") else False)


def _properties(obj: PSObject) -> dict[str, Any]:
    return {
        p.name: p.get_value(obj) for p in obj.PSObject.extended_properties + obj.PSObject.adapted_properties
    }


def _instances(inv: Invocation, class_name: str) -> list[PSObject]:
    node = inv.node
    if class_name.lower() == "win32_service":
        return [objects.win32_service(s, node.iis.host_pid(s)) for s in node.scm.all() if not s.spec.driver]
    if class_name.lower() == "win32_process":
        return [objects.win32_process(p) for p in node.processes.all()]
    raise _CimError(_INVALID_CLASS)


async def get_cim_instance(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    class_name = bound.get("ClassName", "")
    try:
        found = _instances(inv, class_name)
        if "Filter" in bound:
            test = _matcher(bound["Filter"])
            found = [obj for obj in found if test(_properties(obj))]
    except _CimError as exc:
        _fail(inv, exc.kind, class_name)
        return
    for obj in found:
        inv.write(obj)


async def invoke_cim_method(inv: Invocation, bound: dict[str, Any], input: list[Any]) -> None:
    class_name, method = bound.get("ClassName", ""), bound.get("MethodName", "")
    if class_name.lower() != "win32_process":
        _fail(inv, _INVALID_CLASS, class_name)
        return
    if method.lower() != "create":
        _fail(inv, _INVALID_METHOD, method)
        return
    arguments = {str(k).lower(): v for k, v in bound.get("Arguments", {}).items()}
    command_line = arguments.get("commandline")
    if not command_line:
        # Win32_Process.Create's "Invalid Parameter" return value.
        inv.write(objects.process_create_result(0, 21))
        return
    pid = inv.node.spawn_detached(str(command_line))
    inv.write(objects.process_create_result(pid, 0))


CMDLETS = (
    Cmdlet(
        "Get-CimInstance",
        _NS + "GetCimInstanceCommand",
        (
            Param("ClassName", "string", ("Class",), position=0, mandatory=True),
            Param("Filter", "string"),
            Param("Namespace", "string"),
            Param("ComputerName", "strings", ("Cn",)),
            Param("Property", "strings"),
        ),
        get_cim_instance,
    ),
    Cmdlet(
        "Invoke-CimMethod",
        _NS + "InvokeCimMethodCommand",
        (
            Param("ClassName", "string", ("Class",), position=0, mandatory=True),
            Param("MethodName", "string", ("Name",), position=2, mandatory=True),
            Param("Arguments", "hashtable", position=1),
            Param("Namespace", "string"),
            Param("ComputerName", "strings", ("Cn",)),
        ),
        invoke_cim_method,
    ),
)
