"""Configuration of the simulated farm: the `sim:` section of an inventory, or a sim config file.

Everything that makes a farm behave (timings, faults, quotas, JEA endpoints) is here, validated with
file:line:column errors like the inventory itself, and reproducible from `seed`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simfarm import source

SERVICE_NAMES = ("HTTP", "WAS", "W3SVC", "W3LOGSVC", "WinRM", "RPCSS", "IISADMIN")


class _Strict(BaseModel):
    # No .inf or .nan: an infinite timing would hang the node, a NaN compares false with every bound.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Range(_Strict):
    """Seconds, drawn uniformly from [low, high] with the farm's seeded generator."""

    low: Annotated[float, Field(ge=0)] = 0.05
    high: Annotated[float, Field(ge=0)] = 0.2

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self


class ServiceTiming(_Strict):
    stop: Range = Range()
    start: Range = Range()


class Timings(_Strict):
    default: ServiceTiming = ServiceTiming()
    services: dict[str, ServiceTiming] = {}


class WinRMConfig(_Strict):
    """WinRM service and PowerShell plugin quotas (defaults from docs/windows-fidelity.md §5)."""

    max_shells_per_user: Annotated[int, Field(ge=1)] = 30
    max_concurrent_operations_per_user: Annotated[int, Field(ge=1)] = 1500
    max_envelope_size_kb: Annotated[int, Field(ge=32)] = 500
    max_timeout_ms: Annotated[int, Field(ge=1000)] = 60000
    allow_basic_over_http: bool = False


class Endpoint(_Strict):
    """A JEA-style session configuration: only the listed cmdlets, NoLanguage (no script text)."""

    name: Annotated[str, Field(min_length=1)]
    visible_cmdlets: list[str]


# --- faults ---------------------------------------------------------------------------------------


class HangStop(_Strict):
    """The service sticks in StopPending and never reaches Stopped."""

    kind: Literal["hang_stop"]
    service: str = "W3SVC"


class ControlBusy(_Strict):
    """While the service is pending, controls and queries answer 1061 for `count` attempts."""

    kind: Literal["control_busy"]
    service: str = "W3SVC"
    count: Annotated[int, Field(ge=1)] = 3


class AccessDenied(_Strict):
    """Opening the service for control fails with Win32 error 5."""

    kind: Literal["access_denied"]
    service: str = "W3SVC"


class Disabled(_Strict):
    """StartType Disabled: start fails with 1058."""

    kind: Literal["disabled"]
    service: str = "W3SVC"


class StartFailure(_Strict):
    """The service goes StartPending then back to Stopped (1053 to a waiting caller)."""

    kind: Literal["start_failure"]
    service: str = "W3SVC"


class StopFailure(_Strict):
    """The service goes StopPending, then back to Running (its stop handler gave up): a caller
    waiting for Stopped sees a state that is neither, which Stop-Service reports as StopServiceFailed."""

    kind: Literal["stop_failure"]
    service: str = "W3SVC"


class UnhealthyAfterStart(_Strict):
    """After the next start the site answers 500 on /healthz (services still Running)."""

    kind: Literal["unhealthy_after_start"]


class ErrorsAfterStart(_Strict):
    """After the next start the application answers 500 on its pages while /healthz stays 200: a
    broken deployment that a health check alone does not see."""

    kind: Literal["errors_after_start"]


class SlowWarmup(_Strict):
    """The first request after a start takes this long."""

    kind: Literal["slow_warmup"]
    seconds: Annotated[float, Field(ge=0)] = 2.0


class WinRMDown(_Strict):
    """The WinRM service is stopped from the start: the node's WinRM ports refuse connections."""

    kind: Literal["winrm_down"]


class WrongCredentials(_Strict):
    """The node does not accept the farm's credentials: every authentication gets 401."""

    kind: Literal["wrong_credentials"]


class Latency(_Strict):
    """Added delay before every WinRM response."""

    kind: Literal["latency"]
    ms: Annotated[int, Field(ge=0, le=60000)]


class Resets(_Strict):
    """This share of WinRM requests have their connection reset instead of an answer."""

    kind: Literal["resets"]
    share: Annotated[float, Field(ge=0, le=1)]


Fault = Annotated[
    HangStop
    | ControlBusy
    | AccessDenied
    | Disabled
    | StartFailure
    | StopFailure
    | UnhealthyAfterStart
    | ErrorsAfterStart
    | SlowWarmup
    | WinRMDown
    | WrongCredentials
    | Latency
    | Resets,
    Field(discriminator="kind"),
]


class NodeSim(_Strict):
    faults: list[Fault] = []
    timings: Timings | None = None


class HAProxySim(_Strict):
    """The HAProxy the farm starts when the inventory's balancer is HAProxy."""

    frontend: str | None = None
    """ADDR:PORT of the first instance's frontend (each further instance: the next port); default:
    the first node's address, site_port + 1."""
    inter_ms: Annotated[int, Field(ge=100)] = 1000
    fastinter_ms: Annotated[int, Field(ge=100)] = 500
    rise: Annotated[int, Field(ge=1)] = 2
    fall: Annotated[int, Field(ge=1)] = 2


class SimConfig(_Strict):
    seed: int = 1
    username: str = "orchestrator-demo"
    password: str = "Demo-Passw0rd!"
    site_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    base_address: str = "127.0.1.1"
    iisadmin: bool = False
    app_pools: list[str] = ["DefaultAppPool"]
    shutdown_time_limit: Annotated[float, Field(gt=0)] = 90.0
    startup_time_limit: Annotated[float, Field(gt=0)] = 90.0
    timings: Timings = Timings()
    winrm: WinRMConfig = WinRMConfig()
    endpoints: list[Endpoint] = []
    nodes: dict[str, NodeSim] = {}
    haproxy: HAProxySim = HAProxySim()


def sim_config(doc: source.Document) -> SimConfig:
    """The farm's settings: a file whose top level is the sim section, or an inventory's `sim:`."""
    if isinstance(doc.data, dict) and "nodes" in doc.data and isinstance(doc.data["nodes"], list):
        # An inventory: the farm's settings live under `sim:`; the rest belongs to the orchestrator.
        return source.validate(doc, SimConfig, ("sim",)) if "sim" in doc.data else SimConfig()
    return source.validate(doc, SimConfig)
