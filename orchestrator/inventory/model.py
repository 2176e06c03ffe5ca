"""The inventory file as pydantic models: node settings, groups, rollout policy, load balancer."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    model_validator,
)

from orchestrator.inventory.values import (
    AppPoolName,
    AwareDatetime,
    EnvName,
    Host,
    LbArgTemplate,
    LbUrlTemplate,
    Name,
    NameTemplate,
    NodeCount,
    NodeFloor,
    NonNegativeSeconds,
    Seconds,
    ServiceName,
    Share,
    Text,
    UrlTemplate,
    WarmupTemplate,
    _check_lb_text,
)

# --- node settings ----------------------------------------------------------------------------------


class _Model(BaseModel):
    # allow_inf_nan=False: `.inf` as a timeout would mean "wait forever", `.nan` compares false with
    # every bound; neither is a number an operator meant.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True, allow_inf_nan=False
    )


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
    services: list[ServiceName] = []
    """For type services: service names (not display names, no wildcards); stopped dependents first,
    started in dependency order."""
    app_pools: list[AppPoolName] = []
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
    ca_file: str | None = None
    """CA bundle to verify an https health URL's certificate, relative to the inventory; by default
    the system's trusted CAs."""
    tls_verify: bool = True
    """Verify an https health URL's certificate. May only be turned off on a node, never for a group."""
    allow_other_host: bool = False
    """Accept a health or warm-up URL on another host than the node's. By default refused: a check of
    another machine (a shared balancer address, a copy-pasted host) says nothing about this node."""


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
    backend: Text | Annotated[list[Text], Field(min_length=1)]
    """The backend holding the servers, or a list of backends (a server may sit in several)."""
    timeout: Seconds = 5.0
    """Per runtime API command."""
    config: Text | None = None
    """HAProxy's configuration file, when readable here: a warning if it keeps no server-state-file."""
    drain_state: Literal["drain", "maint"] = "drain"
    """How a server leaves rotation: drain (health checks keep running) or maint (also moves
    persistent and pinned traffic away; the health check stops until ready)."""


def _check_body(value: Any) -> Any:
    """Every string in a JSON body is a template: a placeholder typo fails here."""
    if isinstance(value, str):
        _check_lb_text(value)
    elif isinstance(value, dict):
        for item in value.values():
            _check_body(item)
    elif isinstance(value, list):
        for item in value:
            _check_body(item)
    return value


class HttpCall(_Model):
    """One request of the http driver; strings in `url` and `body` have {lb_name}, {name} and {host}
    substituted."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: LbUrlTemplate
    body: Annotated[Any, AfterValidator(_check_body)] = None
    """A JSON document sent with the request (none when absent)."""


class HttpField(_Model):
    """Where a value sits in the state document and what its values mean."""

    path: Text
    """Dotted path into the JSON answer, e.g. `member.state` or `servers.0.status`."""
    map: dict[str, Any] = {}
    """Answer value (as text) -> our value, e.g. {enabled: in, disabled: out}; unmapped values are
    taken as they are (rotation: anything else is unknown)."""


class HttpState(HttpCall):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    rotation: HttpField = HttpField(path="rotation")
    healthy: HttpField | None = HttpField(path="healthy")
    sessions: HttpField | None = HttpField(path="sessions")


class HttpLbSettings(_Model):
    drain: HttpCall | None = None
    """The request that drains a server (or the shorthand drain_url: a POST)."""
    ready: HttpCall | None = None
    recheck: HttpCall | None = None
    """Optional: asks the balancer to check the server afresh before ready."""
    state: HttpState | None = None
    """The request that reads a server's state (or the shorthand status_url: a GET answering
    {"rotation": "in|out|unknown", "healthy": true|false|null, "sessions": N|null})."""
    drain_url: LbUrlTemplate | None = None
    ready_url: LbUrlTemplate | None = None
    status_url: LbUrlTemplate | None = None
    token_env: EnvName | None = None
    """Environment variable with a bearer token (sent as `Authorization: Bearer ...`)."""
    auth_header: Text = "Authorization"
    auth_env: EnvName | None = None
    """Environment variable holding the whole value of auth_header (instead of token_env)."""
    ca_file: Text | None = None
    """CA bundle for an https balancer API; certificates are always verified."""
    timeout: Seconds = 10.0
    """Per request."""

    @model_validator(mode="after")
    def _each_operation_once(self) -> HttpLbSettings:
        for op, short in (("drain", "drain_url"), ("ready", "ready_url"), ("state", "status_url")):
            given = getattr(self, op) is not None, getattr(self, short) is not None
            if all(given):
                raise ValueError(f"give {op} or {short}, not both")
            if not any(given):
                raise ValueError(f"needs {op} (or the shorthand {short})")
        if self.token_env is not None and self.auth_env is not None:
            raise ValueError("give token_env or auth_env, not both")
        return self


class CommandLbSettings(_Model):
    drain: Annotated[list[LbArgTemplate], Field(min_length=1)]
    """Command line (argv list, no shell) that drains a server; {lb_name}, {name} and {host} are
    substituted, and the same values are in the environment (ORCH_LB_NAME, ORCH_NODE, ORCH_HOST)."""
    ready: Annotated[list[LbArgTemplate], Field(min_length=1)]
    status: Annotated[list[LbArgTemplate], Field(min_length=1)]
    """Prints {"rotation": "in|out|unknown", "healthy": true|false|null, "sessions": N|null}."""
    recheck: Annotated[list[LbArgTemplate], Field(min_length=1)] | None = None
    """Optional: asks the balancer to check the server afresh before ready."""
    timeout: Seconds = 30.0
    """Per command; on expiry its whole process group is killed."""


class LoadBalancer(_Model):
    driver: Literal["none", "haproxy", "http", "command"] = "none"
    haproxy: HAProxySettings | None = None
    http: HttpLbSettings | None = None
    command: CommandLbSettings | None = None
    drain_timeout: Seconds = 120.0
    """How long the drain waits for the node's requests to finish (balancer and node counts)."""
    on_drain_timeout: Literal["fail", "proceed"] = "fail"
    """When requests remain after drain_timeout: fail the node (left drained, not stopped), or
    proceed with the stop (the remaining requests may fail)."""
    node_drain: bool = True
    """Also wait until the node itself reports no request in flight (Get-WebRequest), for every
    driver: the proof that works behind balancers that expose no per-server counts."""
    watch_seconds: NonNegativeSeconds = 0.0
    """After a node rejoins: it must stay UP with its 5xx count flat this long, else it is drained
    again and fails."""


def _check_webhook_url(value: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise ValueError("expected an http:// or https:// URL")
    return value


class Webhook(_Model):
    """An HTTP endpoint told when a run starts, finishes or aborts (POST, JSON). Exactly one of url
    and url_env."""

    url: Annotated[str, AfterValidator(_check_webhook_url)] | None = None
    """The endpoint. Chat webhook URLs are often secrets themselves: prefer url_env."""
    url_env: EnvName | None = None
    """Environment variable holding the endpoint's URL; read when the run starts, never logged."""
    token_env: EnvName | None = None
    """Environment variable with a bearer token sent as `Authorization: Bearer ...`; never logged."""
    on: Annotated[list[Literal["start", "finish", "abort"]], Field(min_length=1)] = [
        "start",
        "finish",
        "abort",
    ]
    """Which moments to report: start (the run holds its lock), finish (succeeded or partial), abort
    (any other outcome: budget, window, signal, capacity, preflight refused, internal error)."""
    format: Literal["json", "text"] = "json"
    """json: the full payload; text: `{"text": "<one-line summary>"}`, which chat tools post as is."""
    timeout: Seconds = 5.0
    """Seconds per attempt."""
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    """Further attempts after a failed one (connection error, timeout, a status other than 2xx)."""

    @model_validator(mode="after")
    def _one_url(self) -> Webhook:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("a webhook needs exactly one of url and url_env")
        return self


class Notify(_Model):
    """Who is told about runs. A notification that fails is logged and never fails the run."""

    webhooks: list[Webhook] = []


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
    load_balancers: list[LoadBalancer] = []
    """Several balancer instances in front of the same nodes (an HA pair, two tiers): a node is out
    only when out on every one. Instead of load_balancer, not beside it."""
    journal: Text = ".orchestrator/journal.sqlite"
    """The run journal: a SQLite file, relative to the inventory file, or a postgresql:// URL (no
    password in it) shared by several controllers."""
    journal_password_env: EnvName | None = None
    """The environment variable holding the PostgreSQL journal's password; without it, libpq's own
    places (PGPASSWORD, ~/.pgpass)."""
    journal_lease_seconds: Annotated[float, Field(gt=0, le=3600)] = 30
    """How long a run's lease on the farm outlives its last heartbeat before another run may take
    the farm over."""
    journal_heartbeat_seconds: Annotated[float, Field(gt=0, le=600)] = 5
    """How often a run renews its lease; well under journal_lease_seconds."""
    journal_outage_seconds: Annotated[float, Field(ge=0, le=3600)] = 20
    """How long a journal write waits for an unreachable database before the run stops starting
    nodes."""
    journal_keep_days: Annotated[float, Field(gt=0)] = 365
    """Finished runs older than this many days are pruned from the journal when a run ends; a run
    with no recorded end (in progress, or its process died) is never pruned."""
    notify: Notify = Notify()
    sim: Any = None
    """An extension slot: the simulated farm's settings, read by the farm; not modelled here."""


def json_schema() -> dict[str, Any]:
    """JSON Schema of the inventory file, for editors."""
    schema = InventoryFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "orchestrator inventory"
    return schema
