"""The simulated service control manager: the IIS service graph, states, timings and Win32 errors.

Two levels, as on Windows:
- the raw SCM (`control_stop`, `start`): ControlService / StartService semantics, used by `net`,
  `sc` and iisreset; a stop control on a service with running dependents answers 1051.
- ServiceController (`controller_stop`, `controller_start`): the .NET class the cmdlets use; its
  Stop() first stops every dependent that is not Stopped, waiting up to 30 s for each.

State changes happen on asyncio tasks owned by the SCM, never by the caller, so a caller that is
cancelled (Ctrl-C, PSRP stop) leaves the service to finish its transition as Windows would.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from simfarm.config import (
    AccessDenied,
    ControlBusy,
    Disabled,
    HangStop,
    ServiceTiming,
    StartFailure,
    StopFailure,
    WinRMDown,
)

if TYPE_CHECKING:
    from simfarm.node import SimNode

# .NET's ServiceController always names the local machine '.'.
MACHINE = "."
# ServiceController.Stop() waits this long for each dependent (dotnet/runtime ServiceController.cs).
DEPENDENT_STOP_WAIT_S = 30.0


class ServiceState(enum.IntEnum):
    """Win32 SERVICE_* state values, which ServiceControllerStatus mirrors."""

    Stopped = 1
    StartPending = 2
    StopPending = 3
    Running = 4


PENDING = (ServiceState.StartPending, ServiceState.StopPending)

WIN32_MESSAGES: dict[int, str] = {
    5: "Access is denied.",
    1051: "A stop control has been sent to a service that other running services are dependent on.",
    1052: "The requested control is not valid for this service.",
    1053: "The service did not respond to the start or control request in a timely fashion.",
    1056: "An instance of the service is already running.",
    1058: (
        "The service cannot be started, either because it is disabled or because it has no enabled "
        "devices associated with it."
    ),
    1060: "The specified service does not exist as an installed service.",
    1061: "The service cannot accept control messages at this time.",
    1062: "The service has not been started.",
    1068: "The dependency service or group failed to start.",
}


class Win32Error(Exception):
    """A Win32 error code as a Win32Exception carries it."""

    def __init__(self, code: int) -> None:
        super().__init__(WIN32_MESSAGES[code])
        self.code = code
        self.message = WIN32_MESSAGES[code]


class ServiceControllerError(Exception):
    """.NET InvalidOperationException thrown by ServiceController, wrapping a Win32Error."""

    def __init__(self, message: str, inner: Win32Error) -> None:
        super().__init__(message)
        self.message = message
        self.inner = inner


class ServiceTimeoutError(Exception):
    """System.ServiceProcess.TimeoutException from WaitForStatus."""

    HRESULT = -2146232826  # 0x80131906

    def __init__(self, service: str) -> None:
        self.message = (
            f"The operation requested for service '{service}' has not been completed within the "
            "specified time interval."
        )
        super().__init__(self.message)
        self.service = service


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    display_name: str
    depends_on: tuple[str, ...]
    start_type: str = "Automatic"
    # HTTP is HTTP.sys, a kernel driver: listed by name only, never by wildcard or Win32_Service.
    driver: bool = False
    stoppable: bool = True
    # The svchost group (or image) hosting the service; None for the kernel driver.
    host: str | None = "svchost"


# WAS's own dependencies are not confirmed by any source (docs/windows-fidelity.md §3); RPCSS is what the
# WAS service registration lists on Server 2016/2019 as far as we know, and HTTP is deliberately not
# among them, so `net stop http /y` leaves WAS running. W3LOGSVC depends on W3SVC (it is W3SVC's
# only DependentService). IISADMIN's dependencies are unconfirmed; RPCSS is the safe subset.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("HTTP", "HTTP Service", (), start_type="Manual", driver=True, host=None),
    ServiceSpec("RPCSS", "Remote Procedure Call (RPC)", (), stoppable=False, host="rpcss"),
    ServiceSpec("WAS", "Windows Process Activation Service", ("RPCSS",), start_type="Manual", host="iissvcs"),
    ServiceSpec("W3SVC", "World Wide Web Publishing Service", ("WAS", "HTTP"), host="iissvcs"),
    ServiceSpec(
        "W3LOGSVC",
        "W3C Logging Service",
        ("W3SVC",),
        start_type="Manual",
        host="LocalSystemNetworkRestricted",
    ),
    ServiceSpec(
        "WinRM", "Windows Remote Management (WS-Management)", ("RPCSS", "HTTP"), host="NetworkService"
    ),
)
IISADMIN = ServiceSpec("IISADMIN", "IIS Admin Service", ("RPCSS",), host="inetinfo")


@dataclass
class Service:
    spec: ServiceSpec
    state: ServiceState
    start_type: str
    exit_code: int = 0
    _transition: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def display_name(self) -> str:
        return self.spec.display_name


StateListener = Callable[[Service, ServiceState, bool], None]
# (service name, hang) -> what must finish before the service reports Stopped. With `hang` the work
# never finishes on its own: only killing what it waits for (or terminating the service) ends it.
StopWork = Callable[[str, bool], Awaitable[None]]


class ServiceControlManager:
    """The services of one node and every control request made to them."""

    def __init__(self, node: SimNode) -> None:
        self._node = node
        specs = (*SERVICES, IISADMIN) if node.config.iisadmin else SERVICES
        self._services: dict[str, Service] = {}
        for spec in specs:
            start_type = "Disabled" if node.has_fault(Disabled, spec.name) else spec.start_type
            self._services[spec.name.lower()] = Service(
                spec, ServiceState.Stopped, start_type, exit_code=1077
            )
        self._listeners: list[StateListener] = []
        self._stop_work: StopWork | None = None
        self._changed = asyncio.Event()
        self._busy_left: dict[str, int] = {}
        for svc in self._services.values():
            busy = node.fault(ControlBusy, svc.name)
            if busy is not None:
                self._busy_left[svc.name.lower()] = busy.count

    # --- wiring -----------------------------------------------------------------------------------

    def on_state(self, listener: StateListener) -> None:
        """`listener(service, state, abrupt)` after every state change; abrupt = process killed."""
        self._listeners.append(listener)

    def set_stop_work(self, work: StopWork) -> None:
        """What a stopping service must finish before it reports Stopped (IIS draining its workers)."""
        self._stop_work = work

    def boot(self) -> None:
        """Initial states: everything Running except what the faults say."""
        winrm_down = self._node.has_fault(WinRMDown)
        for svc in self._services.values():
            down = winrm_down and svc.name == "WinRM"
            self._set(svc, ServiceState.Stopped if down else ServiceState.Running, record=False)
            svc.exit_code = 1077 if down else 0

    async def close(self) -> None:
        tasks = [s._transition for s in self._services.values() if s._transition is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- queries ----------------------------------------------------------------------------------

    def all(self) -> list[Service]:
        return sorted(self._services.values(), key=lambda s: s.name.lower())

    def find(self, name: str) -> Service | None:
        return self._services.get(name.lower())

    def get(self, name: str) -> Service:
        svc = self.find(name)
        if svc is None:
            raise Win32Error(1060)
        return svc

    def state(self, name: str) -> ServiceState:
        return self.get(name).state

    def depends_on(self, name: str) -> list[Service]:
        """ServicesDependedOn: the direct dependencies, as the registry lists them."""
        return [s for n in self.get(name).spec.depends_on if (s := self.find(n)) is not None]

    def dependents(self, name: str) -> list[Service]:
        """DependentServices: every service that depends on `name`, directly or not.

        EnumDependentServices returns them in reverse start order, so a service always comes before
        the services it depends on and stopping them in list order never hits 1051.
        """
        target = name.lower()
        found: dict[str, Service] = {}

        def visit(current: str) -> None:
            for svc in self.all():
                if current in (d.lower() for d in svc.spec.depends_on) and svc.name.lower() not in found:
                    found[svc.name.lower()] = svc
                    visit(svc.name.lower())

        visit(target)
        return sorted(found.values(), key=lambda s: (-self._depth(s.name, target), s.name.lower()))

    def _depth(self, name: str, root: str) -> int:
        """Longest dependency path from `name` down to `root`."""
        if name.lower() == root:
            return 0
        depths = [self._depth(d, root) for d in self.get(name).spec.depends_on if self.find(d) is not None]
        reachable = [d for d in depths if d >= 0]
        return 1 + max(reachable) if reachable else -1

    async def wait_for(self, name: str, target: ServiceState, within: float | None) -> bool:
        """Whether `name` reached `target` within `within` seconds (None: forever)."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while self.state(name) != target:
            event = self._changed
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return self.state(name) == target
        return True

    async def wait_settled(self, name: str, within: float | None) -> bool:
        """Whether `name` left its pending state within `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while self.state(name) in PENDING:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                break
        return self.state(name) not in PENDING

    # --- raw SCM: OpenService / ControlService / StartService / ChangeServiceConfig -------------

    def open_for_control(self, name: str) -> Service:
        """OpenService with stop/start access; the access_denied fault refuses it."""
        svc = self.get(name)
        if self._node.has_fault(AccessDenied, svc.name):
            raise Win32Error(5)
        return svc

    def control_stop(self, name: str, source: str) -> None:
        """ControlService(SERVICE_CONTROL_STOP): returns once the service accepted the control."""
        svc = self.open_for_control(name)
        self._node.record("service_control", service=svc.name, control="stop", source=source)
        try:
            self._accept_stop(svc)
        except Win32Error as exc:
            self._node.record("service_control_failed", service=svc.name, control="stop", error=exc.code)
            raise
        self._set(svc, ServiceState.StopPending)
        self._begin(svc, self._stopping(svc))

    def _accept_stop(self, svc: Service) -> None:
        if not svc.spec.stoppable:
            raise Win32Error(1052)
        if self._consume_busy(svc):
            raise Win32Error(1061)
        if svc.state == ServiceState.Stopped:
            raise Win32Error(1062)
        if svc.state in PENDING:
            raise Win32Error(1061)
        if any(d.state != ServiceState.Stopped for d in self.dependents(svc.name)):
            raise Win32Error(1051)

    def _consume_busy(self, svc: Service) -> bool:
        left = self._busy_left.get(svc.name.lower(), 0)
        if left <= 0:
            return False
        self._busy_left[svc.name.lower()] = left - 1
        return True

    async def start(self, name: str, source: str) -> None:
        """StartService: starts stopped dependencies first, as the SCM does, then the service.

        Returns once the service is StartPending. With the start_failure fault the service process
        never connects to the SCM: the call blocks for the start time and answers 1053.
        """
        svc = self.open_for_control(name)
        self._node.record("service_control", service=svc.name, control="start", source=source)
        try:
            await self._start(svc, source)
        except Win32Error as exc:
            self._node.record("service_control_failed", service=svc.name, control="start", error=exc.code)
            raise

    async def _start(self, svc: Service, source: str) -> None:
        if self._consume_busy(svc):
            raise Win32Error(1061)
        if svc.start_type == "Disabled":
            raise Win32Error(1058)
        if svc.state != ServiceState.Stopped:
            raise Win32Error(1056)
        for dep in self.depends_on(svc.name):
            if dep.state == ServiceState.Running:
                continue
            try:
                if dep.state == ServiceState.Stopped:
                    await self._start(dep, source)
                if not await self.wait_for(dep.name, ServiceState.Running, DEPENDENT_STOP_WAIT_S):
                    raise Win32Error(1068)
            except Win32Error as exc:
                if exc.code == 1056:
                    continue
                raise Win32Error(1068) from exc
        if svc.state != ServiceState.Stopped:
            raise Win32Error(1056)
        self._set(svc, ServiceState.StartPending)
        if self._node.has_fault(StartFailure, svc.name):
            await asyncio.sleep(self._duration(svc, "start"))
            svc.exit_code = 1053
            self._set(svc, ServiceState.Stopped)
            raise Win32Error(1053)
        self._begin(svc, self._starting(svc))

    def set_start_type(self, name: str, start_type: str) -> None:
        """ChangeServiceConfig(dwStartType)."""
        svc = self.open_for_control(name)
        svc.start_type = start_type
        self._node.record("service_config", service=svc.name, start_type=start_type)

    def terminate(self, name: str, source: str) -> None:
        """The hosting process was killed: the service is Stopped at once, whatever it was doing."""
        svc = self.get(name)
        if svc.state == ServiceState.Stopped:
            return
        self._node.record("service_terminated", service=svc.name, source=source)
        if svc._transition is not None:
            svc._transition.cancel()
            svc._transition = None
        svc.exit_code = 1067
        self._set(svc, ServiceState.Stopped, abrupt=True)

    # --- ServiceController (.NET) -----------------------------------------------------------------

    def _open_controller(self, name: str) -> Service:
        """OpenService as ServiceController does it, with its message for a refusal."""
        svc = self.get(name)
        try:
            self.open_for_control(svc.name)
        except Win32Error as exc:
            raise ServiceControllerError(
                f"Cannot open '{svc.name}' service on computer '{MACHINE}'.", exc
            ) from exc
        return svc

    async def controller_stop(self, name: str, source: str) -> None:
        """ServiceController.Stop(): dependents first (each waited for up to 30 s), then the service."""
        svc = self._open_controller(name)
        for dep in self.dependents(svc.name):
            if dep.state != ServiceState.Stopped:
                await self.controller_stop(dep.name, source)
                if not await self.wait_for(dep.name, ServiceState.Stopped, DEPENDENT_STOP_WAIT_S):
                    raise ServiceTimeoutError(dep.name)
        try:
            self.control_stop(svc.name, source)
        except Win32Error as exc:
            raise ServiceControllerError(
                f"Cannot stop '{svc.name}' service on computer '{MACHINE}'.", exc
            ) from exc

    async def controller_start(self, name: str, source: str) -> None:
        """ServiceController.Start()."""
        svc = self._open_controller(name)
        try:
            await self.start(svc.name, source)
        except Win32Error as exc:
            raise ServiceControllerError(
                f"Cannot start service '{svc.name}' on computer '{MACHINE}'.", exc
            ) from exc

    # --- transitions ------------------------------------------------------------------------------

    def timing(self, svc: Service) -> ServiceTiming:
        timings = self._node.sim.timings or self._node.config.timings
        for key, value in timings.services.items():
            if key.lower() == svc.name.lower():
                return value
        return timings.default

    def _duration(self, svc: Service, kind: str) -> float:
        rng = self.timing(svc).stop if kind == "stop" else self.timing(svc).start
        return self._node.rng.uniform(rng.low, rng.high)

    def _begin(self, svc: Service, work: Awaitable[None]) -> None:
        svc._transition = asyncio.ensure_future(work)

    async def _stopping(self, svc: Service) -> None:
        duration = self._duration(svc, "stop")
        hang = self._node.has_fault(HangStop, svc.name)
        jobs: list[Awaitable[None]] = [asyncio.sleep(duration)]
        if self._stop_work is not None:
            jobs.append(self._stop_work(svc.name, hang))
        await asyncio.gather(*jobs)
        if hang and self._stop_work is None:
            # Stuck in StopPending until its host process is killed (terminate()).
            await asyncio.Event().wait()
        if self._node.has_fault(StopFailure, svc.name):
            svc._transition = None
            self._set(svc, ServiceState.Running)
            return
        svc._transition = None
        svc.exit_code = 0
        self._set(svc, ServiceState.Stopped)

    async def _starting(self, svc: Service) -> None:
        await asyncio.sleep(self._duration(svc, "start"))
        svc._transition = None
        svc.exit_code = 0
        self._set(svc, ServiceState.Running)

    def _set(self, svc: Service, state: ServiceState, *, record: bool = True, abrupt: bool = False) -> None:
        previous = svc.state
        svc.state = state
        if record:
            self._node.record("service_state", service=svc.name, state=state.name)
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        if previous != state:
            for listener in list(self._listeners):
                listener(svc, state, abrupt)
