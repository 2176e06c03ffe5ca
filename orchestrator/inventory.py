"""The inventory: which nodes to restart, how to reach them, and the rollout policy.

An inventory is YAML (reference: docs/inventory.md). Loading it checks everything that can be
checked without touching the network, and every problem becomes a `SourceError` naming the file,
line, column and field. Node settings are layered: `defaults` <- the group's `defaults` <- the node,
merged key by key, except `credentials`, which a more specific layer replaces as a whole (mixing an
environment variable from one layer with a file from another would be a credential nobody wrote).
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import os
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    Tag,
    WithJsonSchema,
)

from orchestrator import yamlsource
from orchestrator.yamlsource import Document, PathKey, SourceError

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
LbArgTemplate = Annotated[str, AfterValidator(_template_checker(_LB_PLACEHOLDERS, "text"))]


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


# --- node settings ----------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)


class Transport(_Model):
    """How to reach the node's WinRM listener."""

    scheme: Literal["http", "https"] = "http"
    """http (port 5985, NTLM/Negotiate/Kerberos with message encryption) or https (port 5986)."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """WinRM port; by default 5985 for http and 5986 for https."""
    auth: Literal["ntlm", "negotiate", "kerberos", "basic", "certificate"] = "ntlm"
    """basic and certificate are refused over http."""
    tls_verify: bool = True
    """Verify the node's TLS certificate (https). May only be turned off on a node, never for a group."""
    ca_file: str | None = None
    """CA bundle to verify the node's certificate, relative to the inventory file."""
    configuration_name: Annotated[str, Field(min_length=1)] | None = None
    """PowerShell session configuration (JEA endpoint), e.g. OrchestratorJEA."""
    connect_timeout: Seconds = 10.0
    operation_timeout: Seconds = 20.0
    """Seconds allowed for one remote call."""


class NodeTransport(Transport):
    """A node's transport with the port resolved."""

    port: int


class CredentialsRef(_Model):
    """Where a node's credentials come from; resolved only when a run starts (orchestrator.credentials)."""

    username_env: EnvName | None = None
    """Environment variable holding the user name."""
    password_env: EnvName | None = None
    """Environment variable holding the password."""
    file: str | None = None
    """YAML file with `username` and `password`, relative to the inventory; must not be readable by
    group or others (mode 0600)."""
    username: Text | None = None
    password: SecretStr | None = None
    """An inline password; refused unless `inline_password: true` stands beside it."""
    inline_password: bool = False
    cert_file: str | None = None
    """Client certificate (PEM) for auth: certificate, relative to the inventory."""
    key_file: str | None = None
    """Private key (PEM) of the client certificate, relative to the inventory; mode 0600."""

    @property
    def form(self) -> Literal["env", "file", "inline", "certificate"]:
        """Which source holds the secret (only meaningful on a validated node)."""
        if self.file is not None:
            return "file"
        if self.cert_file is not None:
            return "certificate"
        return "env" if self.password_env is not None else "inline"


class Action(_Model):
    """What restarting the node means."""

    type: Literal["iis-restart", "services", "apppool-recycle", "http-restart"] = "iis-restart"
    """iis-restart: stop WAS (and its dependents) gracefully, start W3SVC; services: the listed
    services; apppool-recycle: recycle the listed application pools; http-restart: restart HTTP.sys
    (drops WinRM, so it must run detached)."""
    services: list[Annotated[str, Field(min_length=1, pattern=r"^[^/\\]+$")]] = []
    """For type services: service names; stopped dependents first, started in dependency order."""
    app_pools: list[Text] = []
    """For type apppool-recycle: application pool names."""
    detached: bool = False
    """Run stop/start detached on the node, so losing the WinRM connection does not cut it short."""
    escalation: Literal["none", "kill-workers"] = "none"
    """What to do when a stop times out: none (fail, leave the node drained) or kill-workers (kill the
    w3wp worker processes of the stuck pool). Never implied."""


class Health(_Model):
    """The HTTP check a node must pass before it goes back in rotation."""

    url: UrlTemplate | None = None
    """Health URL on the node itself; {host} and {name} are substituted. Required (at some layer)."""
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200
    body_contains: Text | None = None
    timeout: Seconds = 5.0
    """Seconds per request."""
    retries: Annotated[int, Field(ge=0)] = 10
    interval: NonNegativeSeconds = 1.0
    """Seconds between attempts."""
    warmup_urls: list[WarmupTemplate] = []
    """Requested once each after the check passes, to warm caches."""
    soak_seconds: NonNegativeSeconds = 0.0
    """After the check passes, health must stay good this long."""


class NodeHealth(Health):
    """A node's health check with every template substituted."""

    url: str
    warmup_urls: list[str] = []


class Timeouts(_Model):
    """Seconds per phase, and the node's overall deadline."""

    preflight: Seconds = 60.0
    drain: Seconds = 300.0
    stop: Seconds = 120.0
    start: Seconds = 120.0
    verify: Seconds = 120.0
    undrain: Seconds = 60.0
    node: Seconds = 900.0
    """Overall deadline for one node, all phases included."""


class Settings(_Model):
    """Everything `defaults`, a group's `defaults` and a node may set."""

    transport: Transport = Transport()
    credentials: CredentialsRef | None = None
    """Exactly one form: username(_env) + password_env, file, username + password + inline_password,
    or cert_file + key_file. Replaced as a whole by a more specific layer."""
    action: Action = Action()
    health: Health = Health()
    timeouts: Timeouts = Timeouts()
    lb_name: NameTemplate = "{name}"
    """The node's server name in the load balancer; {name} and {host} are substituted."""


class Group(_Model):
    max_unavailable: NodeCount | None = None
    """At most this many of the group's nodes out of rotation at once (a percentage is of the group)."""
    defaults: Settings = Settings()


class NodeEntry(Settings):
    name: Name
    host: Host
    """DNS name or IP address."""
    group: str | None = None


# Keys of a node entry that identify it rather than override settings.
_NODE_OWN_KEYS = frozenset(NodeEntry.model_fields) - frozenset(Settings.model_fields)


class NodeSpec(_Model):
    """One node, fully resolved: defaults <- group defaults <- node, templates substituted, paths absolute."""

    name: str
    host: str
    group: str | None
    transport: NodeTransport
    credentials: CredentialsRef
    action: Action
    health: NodeHealth
    timeouts: Timeouts
    lb_name: str


# --- rollout and load balancer ------------------------------------------------------------------------


class Canary(_Model):
    bake_seconds: NonNegativeSeconds = 0.0
    """After the first batch, wait this long (its health must hold) before going on."""


class FailureBudgetPolicy(_Model):
    """How many node failures the run tolerates; one more and no new node starts.

    With neither max_failures nor max_failure_percent set, no failure is tolerated; with both, the
    stricter one applies.
    """

    max_failures: Annotated[int, Field(ge=0)] | None = None
    """Tolerated failures over the whole run."""
    max_failure_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    """Tolerated failures as a percentage of all nodes (rounded down)."""
    per_batch: Annotated[int, Field(ge=0)] | None = None
    """Tolerated failures within one batch (strategy batch)."""


class ChangeWindow(_Model):
    finish_by: AwareDatetime | None = None
    """ISO 8601 with a timezone; a node whose estimated finish falls later is not started."""


# Tagged, so a bad ramp step is reported at its index rather than as "not a number" for the list.
BatchSize = Annotated[
    Annotated[NodeCount, Tag("size")] | Annotated[list[NodeCount], Field(min_length=1), Tag("ramp")],
    Discriminator(lambda value: "ramp" if isinstance(value, list) else "size"),
]


class Rollout(_Model):
    strategy: Literal["batch", "window"] = "batch"
    batch: BatchSize = Share(1)
    """Strategy batch: a size, a percentage of all nodes, or a ramp like [1, "10%", "25%"] whose last
    step repeats."""
    window: Annotated[int, Field(ge=1)] = 1
    """Strategy window: at most this many nodes in flight; the next starts as soon as one finishes."""
    max_unavailable: NodeCount | None = None
    """Cap on nodes the run has out of rotation at once."""
    min_healthy: NodeFloor = Share(0)
    """Capacity floor: healthy in-rotation nodes never drop below this (a percentage rounds up)."""
    order: Literal["inventory", "sorted", "reverse", "shuffle"] = "inventory"
    seed: int = 0
    """Seed for order: shuffle; the same seed gives the same order."""
    canary: Canary | None = None
    pause_seconds: NonNegativeSeconds = 0.0
    """Pause between batches (strategy batch)."""
    failure_budget: FailureBudgetPolicy = FailureBudgetPolicy()
    change_window: ChangeWindow = ChangeWindow()


def _check_socket(value: str) -> str:
    if not (value.startswith("/") or re.fullmatch(r"[^/:]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}", value)):
        raise ValueError("expected an absolute path to the admin socket or host:port")
    return value


class HAProxySettings(_Model):
    socket: Annotated[str, AfterValidator(_check_socket)]
    """Runtime API: a unix socket path or host:port (needs `level admin`)."""
    backend: Text
    timeout: Seconds = 5.0


class HttpLbSettings(_Model):
    drain_url: LbUrlTemplate
    """Called (POST) to drain a server; {lb_name}, {name} and {host} are substituted."""
    ready_url: LbUrlTemplate
    status_url: LbUrlTemplate
    token_env: EnvName | None = None
    """Environment variable with a bearer token."""
    timeout: Seconds = 10.0


class CommandLbSettings(_Model):
    drain: Annotated[list[LbArgTemplate], Field(min_length=1)]
    """Command line (argv list) that drains a server; {lb_name}, {name} and {host} are substituted."""
    ready: Annotated[list[LbArgTemplate], Field(min_length=1)]
    status: Annotated[list[LbArgTemplate], Field(min_length=1)]
    timeout: Seconds = 30.0


class LoadBalancer(_Model):
    driver: Literal["none", "haproxy", "http", "command"] = "none"
    haproxy: HAProxySettings | None = None
    http: HttpLbSettings | None = None
    command: CommandLbSettings | None = None


def _check_version(value: int) -> int:
    if value != 1:
        raise ValueError(f"unsupported inventory version {value}; this orchestrator reads version 1")
    return value


def _at_least_one_node(nodes: list[NodeEntry]) -> list[NodeEntry]:
    if not nodes:
        raise ValueError("an inventory needs at least one node")
    return nodes


class InventoryFile(_Model):
    """The inventory file as written."""

    version: Annotated[int, AfterValidator(_check_version), Field(json_schema_extra={"const": 1})]
    defaults: Settings = Settings()
    groups: dict[Name, Group] = {}
    nodes: Annotated[list[NodeEntry], AfterValidator(_at_least_one_node)]
    rollout: Rollout = Rollout()
    load_balancer: LoadBalancer = LoadBalancer()
    journal: Text = ".orchestrator/journal.sqlite"
    """SQLite run journal, relative to the inventory file."""
    sim: Any = None
    """Settings of the simulated farm; read by `orchestrator sim`, ignored here."""


def json_schema() -> dict[str, Any]:
    """JSON Schema of the inventory file, for editors."""
    schema = InventoryFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "orchestrator inventory"
    return schema


# --- the loaded inventory -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origins:
    """Where each merged node setting came from, so an error lands on the line that set it."""

    node: str
    node_path: PathKey
    # setting path -> (layer rank: defaults 0 < group 1 < node 2, path in the document)
    assigned: dict[PathKey, tuple[int, PathKey]] = field(default_factory=dict)

    def find(self, setting: PathKey) -> tuple[int, PathKey] | None:
        for cut in range(len(setting), 0, -1):
            hit = self.assigned.get(setting[:cut])
            if hit is not None:
                return hit[0], (*hit[1], *setting[cut:])
        return None

    def where(self, *settings: PathKey) -> PathKey:
        """The most specific place that set any of `settings`; under the node entry if none was set."""
        found = [hit for s in settings if (hit := self.find(s)) is not None]
        if found:
            return max(found, key=lambda hit: hit[0])[1]
        return (*self.node_path, *settings[0]) if settings else self.node_path

    def error(self, doc: Document, message: str, *settings: PathKey) -> SourceError:
        path = self.where(*settings)
        if path[: len(self.node_path)] != self.node_path:
            message += f" (node {self.node!r})"
        return doc.error(path, message)


@dataclass(frozen=True)
class Inventory:
    path: Path
    nodes: tuple[NodeSpec, ...]
    groups: Mapping[str, Group]
    rollout: Rollout
    load_balancer: LoadBalancer
    journal: Path
    warnings: tuple[str, ...]
    """Accepted but risky settings, formatted like errors (file:line:col: field: message)."""
    _document: Document = field(repr=False)
    _origins: Mapping[str, _Origins] = field(repr=False)

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def error_at(self, path: Iterable[str | int], message: str) -> SourceError:
        """An error at a place in the inventory file, e.g. ("rollout", "min_healthy")."""
        return self._document.error(path, message)

    def node_error(self, name: str, setting: PathKey, message: str) -> SourceError:
        """An error about one node's effective `setting` (e.g. ("lb_name",)), placed where it was set."""
        return self._origins[name].error(self._document, message, setting)


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory; raises SourceError for the first problem found."""
    return _from_document(yamlsource.load(path))


def parse_inventory(text: str, file: str) -> Inventory:
    """Validate inventory text as if read from `file` (relative paths resolve beside it)."""
    return _from_document(yamlsource.parse(text, file))


def _from_document(doc: Document) -> Inventory:
    if not isinstance(doc.data, dict):
        raise doc.error((), "an inventory is a YAML mapping with version, defaults, nodes and rollout")
    raw = yamlsource.validate(doc, InventoryFile)
    return _Loader(doc, raw).inventory()


class _Loader:
    def __init__(self, doc: Document, raw: InventoryFile) -> None:
        self.doc = doc
        self.raw = raw
        self.base = Path(doc.file).resolve().parent
        self.warnings: list[str] = []

    def inventory(self) -> Inventory:
        self._check_layers()
        nodes: list[NodeSpec] = []
        origins: dict[str, _Origins] = {}
        for index, entry in enumerate(self.raw.nodes):
            node, origin = self._resolve(index, entry)
            nodes.append(node)
            origins[node.name] = origin
        self._check_unique(nodes, origins)
        self._check_rollout()
        self._check_load_balancer()
        return Inventory(
            path=Path(self.doc.file),
            nodes=tuple(nodes),
            groups=dict(self.raw.groups),
            rollout=self.raw.rollout,
            load_balancer=self.raw.load_balancer,
            journal=self.beside_inventory(self.raw.journal),
            warnings=tuple(self.warnings),
            _document=self.doc,
            _origins=origins,
        )

    def fail(self, path: PathKey, message: str) -> SourceError:
        return self.doc.error(path, message)

    def beside_inventory(self, relative: str) -> Path:
        return Path(os.path.normpath(self.base / relative))

    def warn(self, path: PathKey, message: str) -> None:
        self.warnings.append(str(self.doc.error(path, message)))

    # -- single layers: errors point at exactly the key that is wrong

    def _layers(self) -> Iterator[tuple[PathKey, Settings]]:
        yield ("defaults",), self.raw.defaults
        for name, group in self.raw.groups.items():
            yield ("groups", name, "defaults"), group.defaults
        for index, entry in enumerate(self.raw.nodes):
            yield ("nodes", index), entry

    def _check_layers(self) -> None:
        for base, layer in self._layers():
            if base[0] != "nodes" and not layer.transport.tls_verify:
                raise self.fail(
                    (*base, "transport", "tls_verify"),
                    "tls_verify: false is only accepted on an individual node, never for a whole group",
                )
            if layer.credentials is not None:
                self._check_credentials((*base, "credentials"), layer.credentials)
        for index, entry in enumerate(self.raw.nodes):
            if entry.group is not None and entry.group not in self.raw.groups:
                close = difflib.get_close_matches(entry.group, list(self.raw.groups), n=1)
                hint = f"did you mean {close[0]!r}?" if close else "groups are defined under groups:"
                raise self.fail(("nodes", index, "group"), f"unknown group {entry.group!r}; {hint}")
        for name in self.raw.groups:
            if not any(entry.group == name for entry in self.raw.nodes):
                self.warn(("groups", name), f"group {name!r} has no nodes")

    def _check_credentials(self, path: PathKey, cred: CredentialsRef) -> None:
        given = cred.model_fields_set
        forms = {
            "file": {"file"} & given,
            "cert_file/key_file": {"cert_file", "key_file"} & given,
            "password_env": {"password_env"} & given,
            "password": {"password", "inline_password"} & given,
        }
        present = [name for name, keys in forms.items() if keys]
        if len(present) > 1:
            raise self.fail(
                path, f"credentials take exactly one form, but {' and '.join(present)} are both given"
            )
        if not present:
            raise self.fail(
                path,
                "no password source: give username/username_env with password_env, or file, "
                "or cert_file and key_file",
            )
        form = present[0]
        usernames = {"username", "username_env"} & given
        if form in ("file", "cert_file/key_file") and usernames:
            first = sorted(usernames)[0]
            raise self.fail((*path, first), f"{first} does not go with {form}: the {form} form stands alone")
        if form == "cert_file/key_file":
            for key in ("cert_file", "key_file"):
                if key not in given:
                    raise self.fail(
                        path, f"certificate credentials need both cert_file and key_file; {key} is missing"
                    )
        if form in ("password_env", "password") and len(usernames) != 1:
            problem = "both given" if usernames else "missing"
            raise self.fail(path, f"give exactly one of username or username_env ({problem})")
        if form == "password":
            if cred.password is None:
                raise self.fail((*path, "inline_password"), "inline_password is set but there is no password")
            if not cred.inline_password:
                raise self.fail(
                    (*path, "password"),
                    "an inline password must be acknowledged with inline_password: true; "
                    "prefer password_env or a credentials file",
                )

    # -- merged node view

    def _resolve(self, index: int, entry: NodeEntry) -> tuple[NodeSpec, _Origins]:
        origins = _Origins(entry.name, ("nodes", index))
        merged: dict[str, Any] = {}
        layers: list[tuple[PathKey, Any]] = [(("defaults",), self.doc.data.get("defaults"))]
        if entry.group is not None:
            group_raw = (self.doc.data.get("groups") or {}).get(entry.group) or {}
            layers.append((("groups", entry.group, "defaults"), group_raw.get("defaults")))
        node_raw = {k: v for k, v in self.doc.data["nodes"][index].items() if k not in _NODE_OWN_KEYS}
        layers.append((("nodes", index), node_raw))
        for rank, (base, data) in enumerate(layers):
            _merge(merged, data or {}, (), base, rank, origins)
        settings = Settings.model_validate(merged)
        return _NodeResolver(self, entry, settings, origins).spec(), origins

    def _check_unique(self, nodes: list[NodeSpec], origins: Mapping[str, _Origins]) -> None:
        # Names first: the origins of a duplicated name would be ambiguous.
        first_of: dict[str, int] = {}
        for index, node in enumerate(nodes):
            first = first_of.setdefault(node.name, index)
            if first != index:
                raise self.fail(
                    ("nodes", index, "name"), f"duplicate node name {node.name!r}, first at nodes[{first}]"
                )
        addresses: dict[str, NodeSpec] = {}
        lb_names: dict[str, NodeSpec] = {}
        for index, node in enumerate(nodes):
            address = f"{node.host.lower()}:{node.transport.port}"
            if (other := addresses.setdefault(address, node)) is not node:
                raise self.fail(
                    ("nodes", index, "host"),
                    f"{node.host} port {node.transport.port} is also node {other.name!r}",
                )
            if (other := lb_names.setdefault(node.lb_name, node)) is not node:
                raise origins[node.name].error(
                    self.doc,
                    f"load balancer name {node.lb_name!r} is already used by node {other.name!r}",
                    ("lb_name",),
                )

    # -- rollout and load balancer

    def _check_rollout(self) -> None:
        rollout = self.raw.rollout
        given = rollout.model_fields_set
        here = ("rollout",)
        if rollout.strategy == "window":
            if misplaced := sorted({"batch", "pause_seconds"} & given):
                raise self.fail(
                    (*here, misplaced[0]), f"{misplaced[0]} applies to strategy: batch, not window"
                )
            if rollout.failure_budget.per_batch is not None:
                raise self.fail(
                    (*here, "failure_budget", "per_batch"), "per_batch applies to strategy: batch, not window"
                )
        elif "window" in given:
            raise self.fail((*here, "window"), "window applies to strategy: window; this rollout uses batch")
        if "seed" in given and rollout.order != "shuffle":
            self.warn((*here, "seed"), f"seed has no effect with order: {rollout.order}")

    def _check_load_balancer(self) -> None:
        lb = self.raw.load_balancer
        here = ("load_balancer",)
        for driver in ("haproxy", "http", "command"):
            configured = getattr(lb, driver) is not None
            if lb.driver == driver and not configured:
                raise self.fail((*here, "driver"), f"driver {driver} needs a `{driver}:` section beside it")
            if lb.driver != driver and configured:
                raise self.fail((*here, driver), f"settings for driver {driver}, but driver is {lb.driver}")


class _NodeResolver:
    """Checks that need the merged view of one node, and builds its NodeSpec."""

    def __init__(self, loader: _Loader, entry: NodeEntry, settings: Settings, origins: _Origins) -> None:
        self.loader = loader
        self.entry = entry
        self.settings = settings
        self.origins = origins

    def fail(self, message: str, *settings: PathKey) -> SourceError:
        return self.origins.error(self.loader.doc, message, *settings)

    def spec(self) -> NodeSpec:
        s = self.settings
        credentials = self._credentials()
        self._check_transport(credentials)
        self._check_action()
        transport = NodeTransport.model_validate(
            s.transport.model_dump()
            | {
                "port": s.transport.port or DEFAULT_PORTS[s.transport.scheme],
                "ca_file": self._path(s.transport.ca_file),
            }
        )
        return NodeSpec(
            name=self.entry.name,
            host=self.entry.host,
            group=self.entry.group,
            transport=transport,
            credentials=credentials.model_copy(
                update={
                    "file": self._path(credentials.file),
                    "cert_file": self._path(credentials.cert_file),
                    "key_file": self._path(credentials.key_file),
                }
            ),
            action=s.action,
            health=self._health(),
            timeouts=s.timeouts,
            lb_name=self._substitute(s.lb_name, url=False),
        )

    def _path(self, value: str | None) -> str | None:
        return None if value is None else str(self.loader.beside_inventory(value))

    def _credentials(self) -> CredentialsRef:
        if self.settings.credentials is None:
            raise self.fail(
                "no credentials for this node: set credentials in defaults, in its group's defaults or on it",
                ("credentials",),
            )
        return self.settings.credentials

    def _check_transport(self, credentials: CredentialsRef) -> None:
        t = self.settings.transport
        auth, scheme = ("transport", "auth"), ("transport", "scheme")
        if t.auth == "basic" and t.scheme != "https":
            raise self.fail(
                "auth basic sends credentials in the clear over http; use scheme: https", auth, scheme
            )
        if t.auth == "certificate" and t.scheme != "https":
            raise self.fail("auth certificate is a TLS client certificate; use scheme: https", auth, scheme)
        if t.auth == "certificate" and credentials.form != "certificate":
            raise self.fail(
                "auth certificate needs cert_file and key_file credentials", ("credentials",), auth
            )
        if credentials.form == "certificate" and t.auth != "certificate":
            raise self.fail(f"cert_file/key_file credentials need auth: certificate, not {t.auth}", auth)
        if t.scheme == "http" and t.ca_file is not None:
            raise self.fail("ca_file applies to scheme: https only", ("transport", "ca_file"), scheme)
        if t.scheme == "http" and not t.tls_verify:
            raise self.fail("tls_verify applies to scheme: https only", ("transport", "tls_verify"), scheme)
        if not t.tls_verify:
            self.loader.warn(
                self.origins.where(("transport", "tls_verify")),
                f"TLS certificate verification is off for node {self.entry.name!r}",
            )

    def _check_action(self) -> None:
        a = self.settings.action
        kind = ("action", "type")
        lists = {"services": "services", "app_pools": "apppool-recycle"}
        for key, owner in lists.items():
            values = getattr(a, key)
            if a.type == owner and not values:
                raise self.fail(f"action type {owner} needs a non-empty {key} list", ("action", key), kind)
            if a.type != owner and values:
                raise self.fail(f"{key} only applies to action type {owner}, not {a.type}", ("action", key))
        if a.type == "http-restart" and not a.detached:
            raise self.fail(
                "http-restart stops HTTP.sys and with it WinRM; it needs detached: true",
                ("action", "detached"),
                kind,
            )

    def _health(self) -> NodeHealth:
        h = self.settings.health
        if h.url is None:
            raise self.fail(
                "no health check URL: set health.url in defaults, the group or the node", ("health",)
            )
        url = self._substitute(h.url, url=True)
        origin = re.match(r"https?://[^/]*", url)
        assert origin is not None  # the template validator requires the scheme
        warmups = [
            origin.group(0) + w if w.startswith("/") else w
            for w in (self._substitute(t, url=True) for t in h.warmup_urls)
        ]
        return NodeHealth.model_validate(h.model_dump() | {"url": url, "warmup_urls": warmups})

    def _substitute(self, template: str, *, url: bool) -> str:
        host = self.entry.host
        if url and ":" in host:  # an IPv6 literal needs brackets inside a URL
            host = f"[{host}]"
        return template.format(host=host, name=self.entry.name)


def _merge(
    target: dict[str, Any],
    data: Mapping[str, Any],
    prefix: PathKey,
    base: PathKey,
    rank: int,
    origins: _Origins,
) -> None:
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict) and path != ("credentials",):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge(target[key], value, path, base, rank, origins)
            continue
        target[key] = copy.deepcopy(value)
        for stale in [p for p in origins.assigned if p[: len(path)] == path]:
            del origins.assigned[stale]
        origins.assigned[path] = (rank, (*base, *path))
