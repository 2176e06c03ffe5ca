"""Value types of the inventory: counts and shares, names, hosts, durations, URL templates.

Each carries its own validation, so an error names the field where the bad value stands.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

DEFAULT_PORTS: Mapping[str, int] = {"http": 5985, "https": 5986}

# --- value types ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """A number of nodes: absolute (`3`) or a whole percentage of some total (`"25%"`)."""

    value: int
    percent: bool = False

    def of(self, total: int) -> int:
        """The count this share stands for among `total` nodes, rounded down."""
        return total * self.value // 100 if self.percent else self.value

    def to_json(self) -> int | str:
        return f"{self.value}%" if self.percent else self.value


_PERCENT = re.compile(r"\s*(\d+)\s*%\s*")


def _share_parser(minimum: int) -> Callable[[object], Share]:
    def parse(value: object) -> Share:
        if isinstance(value, Share):
            return value
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("expected a number of nodes or a whole percentage such as '25%'")
        if isinstance(value, int):
            share = Share(value)
        else:
            match = _PERCENT.fullmatch(value)
            if match is None:
                raise ValueError(
                    f"expected a number of nodes or a whole percentage such as '25%', not {value!r}"
                )
            share = Share(int(match.group(1)), percent=True)
            if share.value > 100:
                raise ValueError("a percentage cannot exceed 100%")
        if share.value < minimum:
            raise ValueError(
                f"must be at least {minimum}" + (" (as a percentage: above 0%)" if minimum else "")
            )
        return share

    return parse


def _share_schema(minimum: int) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "integer", "minimum": minimum},
            {"type": "string", "pattern": r"^\d+%$"},
        ]
    }


_share_json = PlainSerializer(Share.to_json)
NodeCount = Annotated[Share, PlainValidator(_share_parser(1)), _share_json, WithJsonSchema(_share_schema(1))]
"""At least one node: an integer >= 1 or a percentage > 0% (rounded down, but never below 1)."""
NodeFloor = Annotated[Share, PlainValidator(_share_parser(0)), _share_json, WithJsonSchema(_share_schema(0))]
"""Zero or more nodes: an integer >= 0 or a percentage."""


def _pattern(regex: str, what: str) -> Callable[[str], str]:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return check


_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
_NAME_WHAT = "a valid name (letters, digits, '.', '_', '-'; starting with a letter or digit)"
_ENV_RE = r"[A-Za-z_][A-Za-z0-9_]*"
Name = Annotated[
    str, AfterValidator(_pattern(_NAME_RE, _NAME_WHAT)), Field(json_schema_extra={"pattern": f"^{_NAME_RE}$"})
]
EnvName = Annotated[
    str,
    AfterValidator(_pattern(_ENV_RE, "an environment variable name")),
    Field(json_schema_extra={"pattern": f"^{_ENV_RE}$"}),
]
Text = Annotated[str, Field(min_length=1)]
Seconds = Annotated[float, Field(gt=0)]
NonNegativeSeconds = Annotated[float, Field(ge=0)]

_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _check_host(value: str) -> str:
    if "://" in value or "/" in value:
        raise ValueError("host is a DNS name or an IP address, not a URL")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return value
    if ":" in value:
        raise ValueError("host must not include a port; set transport.port instead")
    if not _HOSTNAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid DNS name or IP address")
    return value


Host = Annotated[str, AfterValidator(_check_host)]


# PowerShell reads -Name of the service and WebAdministration cmdlets as a wildcard pattern
# (WildcardPattern: * ? [ ] and ` to escape), so `W3*` would stop every service it matches.
_WILDCARDS = "*?[]`"


def _windows_name(what: str, forbidden: str, max_length: int, rule: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value:
            raise ValueError(f"a {what} cannot be empty")
        if len(value) > max_length:
            raise ValueError(f"a {what} has at most {max_length} characters; this one has {len(value)}")
        for char in value:
            if char in _WILDCARDS:
                raise ValueError(
                    f"{value!r} is not one {what}: {char!r} is a wildcard to PowerShell, which would act "
                    f"on every {what} it matches; give the exact name"
                )
            if not char.isprintable():
                raise ValueError(f"{value!r} is not a {what}: it contains the control character {char!r}")
            if char in forbidden:
                raise ValueError(f"{value!r} is not a {what}: {char!r} is not allowed ({rule})")
        if value != value.strip():
            raise ValueError(f"{value!r} is not a {what}: it starts or ends with a space")
        return value

    return check


ServiceName = Annotated[
    str,
    AfterValidator(_windows_name("service name", "/\\", 256, "Windows service names cannot contain / or \\")),
]
"""A service's name as the service control manager knows it (CreateService: at most 256 characters,
no / or \\), and no PowerShell wildcard or control character."""
AppPoolName = Annotated[
    str,
    AfterValidator(
        _windows_name(
            "application pool name",
            '?:@&=,/\\<>"*|',
            256,
            'IIS Manager refuses ? : @ & = , / \\ < > " * | in application pool names',
        )
    ),
]
"""An IIS application pool name: none of the characters IIS Manager refuses, no wildcard or control
character."""


def _template_checker(
    placeholders: tuple[str, ...], kind: Literal["url", "url_or_path", "text"]
) -> Callable[[str], str]:
    """Placeholders are `{name}` style; a typo like `{hots}` must fail here, not at 2 a.m. on a node."""
    names = ", ".join("{" + p + "}" for p in placeholders)

    def check(value: str) -> str:
        try:
            parts = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(
                f"malformed template ({exc}); write a literal brace as '{{{{' or '}}}}'"
            ) from None
        for _literal, name, spec, conversion in parts:
            if name is None:
                continue
            if name not in placeholders:
                close = difflib.get_close_matches(name, placeholders, n=1)
                hint = f"did you mean {{{close[0]}}}?" if close else f"available: {names}"
                raise ValueError(f"unknown placeholder {{{name}}}; {hint}")
            if spec or conversion:
                raise ValueError(f"placeholder {{{name}}} takes no format spec or conversion")
        if kind == "text" or value.startswith(("http://", "https://")):
            return value
        if kind == "url_or_path" and value.startswith("/"):
            return value
        raise ValueError(
            "expected an http:// or https:// URL" + (" or a path starting with '/'" if kind != "url" else "")
        )

    return check


_NODE_PLACEHOLDERS = ("host", "name")
UrlTemplate = Annotated[
    str,
    AfterValidator(_template_checker(_NODE_PLACEHOLDERS, "url")),
    Field(json_schema_extra={"pattern": "^https?://"}),
]
"""An http(s) URL; {host} and {name} are replaced by the node's host and name."""
WarmupTemplate = Annotated[
    str,
    AfterValidator(_template_checker(_NODE_PLACEHOLDERS, "url_or_path")),
    Field(json_schema_extra={"pattern": "^(https?://|/)"}),
]
"""A URL template like `url`, or a path starting with '/' on the health URL's scheme, host and port."""
NameTemplate = Annotated[
    str, Field(min_length=1), AfterValidator(_template_checker(_NODE_PLACEHOLDERS, "text"))
]
_LB_PLACEHOLDERS = ("lb_name", "name", "host")
LbUrlTemplate = Annotated[
    str,
    AfterValidator(_template_checker(_LB_PLACEHOLDERS, "url")),
    Field(json_schema_extra={"pattern": "^https?://"}),
]
_check_lb_text = _template_checker(_LB_PLACEHOLDERS, "text")
LbArgTemplate = Annotated[str, AfterValidator(_check_lb_text)]


def _aware_datetime(value: object) -> object:
    # YAML resolves an unquoted timestamp itself (naive without an offset); a quoted one is a string.
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date and time") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        raise ValueError("expected a date and time with a timezone, e.g. 2024-05-01T22:00:00+02:00")
    if isinstance(value, datetime) and value.utcoffset() is None:
        raise ValueError("the time needs a timezone, e.g. 2024-05-01T22:00:00+02:00 or ...Z")
    return value


AwareDatetime = Annotated[datetime, BeforeValidator(_aware_datetime)]
