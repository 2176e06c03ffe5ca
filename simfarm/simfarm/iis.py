"""IIS on a simulated node: application pools, their w3wp worker processes, and the service hosts.

Pools follow W3SVC: they start when W3SVC runs and stop gracefully while W3SVC (or WAS) stops.
A graceful stop or recycle lets a worker finish its in-flight requests, bounded by
shutdownTimeLimit, after which the worker is terminated and its requests are lost; a killed worker
(Stop-Process, iisreset's forced stop) loses them at once. Workers start on demand (startMode
OnDemand), and a recycle is overlapped: the new worker takes new requests while the old one drains.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from typing import TYPE_CHECKING

from simfarm.config import SlowWarmup
from simfarm.processes import Process
from simfarm.scm import WIN32_MESSAGES, Service, ServiceState

if TYPE_CHECKING:
    from simfarm.node import SimNode

# The svchost groups hosting the simulated services, and the processes that never exit.
SERVICE_HOSTS = {"iissvcs": ("W3SVC", "WAS"), "inetinfo": ("IISADMIN",)}


class PoolState(enum.IntEnum):
    """Microsoft.Web.Administration.ObjectState."""

    Starting = 0
    Started = 1
    Stopping = 2
    Stopped = 3


class PoolStateError(Exception):
    """A pool operation the pool's state does not allow; `hresult` as the COM path reports it."""

    def __init__(self, hresult: int, message: str) -> None:
        super().__init__(message)
        self.hresult = hresult
        self.message = message


class Request:
    """One request a worker is executing; `aborted` fires when the worker dies under it. What it
    carries is what Get-WebRequest (the Request Monitor) shows of it."""

    _ids = itertools.count(1)

    def __init__(self, verb: str = "GET", url: str = "/", client: str = "") -> None:
        self.aborted = asyncio.Event()
        self.id = next(self._ids)
        self.verb = verb
        self.url = url
        self.client = client
        self.started = time.monotonic()


class Worker:
    """One w3wp.exe serving a pool."""

    def __init__(self, iis: Iis, pool: AppPool, warmup: float) -> None:
        self.pool = pool
        self.process = iis.processes.spawn(
            "w3wp", f'c:\\windows\\system32\\inetsrv\\w3wp.exe -ap "{pool.name}"', on_kill=self._killed
        )
        self.ready = asyncio.Event()
        self.exited = asyncio.Event()
        self._iis = iis
        self._in_flight: set[Request] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._warmup = warmup
        if warmup <= 0:
            self.ready.set()
        else:
            iis.node.spawn(self._warm_up())

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def _warm_up(self) -> None:
        """Load the application; a worker that misses startupTimeLimit is terminated."""
        limit = self._iis.node.config.startup_time_limit
        await asyncio.sleep(min(self._warmup, limit))
        if self._warmup > limit:
            self._iis.processes.kill(self.pid, "startupTimeLimit")
        else:
            self.ready.set()

    async def wait_ready(self) -> bool:
        """Whether the worker became ready to serve (False: it died first)."""
        if not self.ready.is_set() and not self.exited.is_set():
            waits = [asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self.exited.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        return self.ready.is_set() and not self.exited.is_set()

    def requests(self) -> list[Request]:
        return sorted(self._in_flight, key=lambda r: r.id)

    def begin(self, verb: str = "GET", url: str = "/", client: str = "") -> Request:
        req = Request(verb, url, client)
        self._in_flight.add(req)
        self._idle.clear()
        return req

    def end(self, req: Request) -> None:
        self._in_flight.discard(req)
        if not self._in_flight:
            self._idle.set()

    async def drain(self) -> None:
        """Graceful shutdown: finish in-flight requests, terminated after shutdownTimeLimit."""
        limit = self._iis.node.config.shutdown_time_limit
        try:
            await asyncio.wait_for(self._idle.wait(), limit)
        except TimeoutError:
            self._iis.processes.kill(self.pid, "shutdownTimeLimit")
            return
        if not self.exited.is_set():
            self._iis.processes.exit(self.pid)
            self._iis.node.record("process_exited", pid=self.pid, process="w3wp", pool=self.pool.name)
            self._finish()

    def _killed(self, source: str) -> None:
        for req in self._in_flight:
            req.aborted.set()
        self._iis.node.record(
            "requests_aborted", pid=self.pid, pool=self.pool.name, count=len(self._in_flight)
        )
        self._in_flight.clear()
        self._idle.set()
        self._finish()

    def _finish(self) -> None:
        self.exited.set()
        self.pool.forget(self)


class AppPool:
    def __init__(self, iis: Iis, name: str) -> None:
        self.name = name
        self.state = PoolState.Stopped
        self.worker: Worker | None = None
        self.draining: set[Worker] = set()
        self._iis = iis

    def workers(self) -> list[Worker]:
        return ([self.worker] if self.worker is not None else []) + sorted(self.draining, key=lambda w: w.pid)

    def acquire(self, warmup: float) -> Worker:
        if self.worker is None:
            self.worker = Worker(self._iis, self, warmup)
            self._iis.node.record("process_started", pid=self.worker.pid, process="w3wp", pool=self.name)
        return self.worker

    def forget(self, worker: Worker) -> None:
        if self.worker is worker:
            self.worker = None
        self.draining.discard(worker)

    async def stop_gracefully(self) -> None:
        self._set(PoolState.Stopping)
        current = self.workers()
        if self.worker is not None:
            self.draining.add(self.worker)
            self.worker = None
        await asyncio.gather(*(w.drain() for w in current))
        if self.state == PoolState.Stopping:
            self._set(PoolState.Stopped)

    def recycle(self) -> None:
        """Overlapped recycle: a fresh worker now, the old one drains in the background."""
        old = self.worker
        self.worker = None
        self._iis.node.record("apppool_recycle", pool=self.name)
        if old is not None:
            self.draining.add(old)
            self._iis.node.spawn(old.drain())
        self.acquire(self._iis.warmup_seconds())

    def kill_workers(self, source: str) -> None:
        for worker in self.workers():
            self._iis.processes.kill(worker.pid, source)

    def _set(self, state: PoolState) -> None:
        self.state = state
        self._iis.node.record("apppool_state", pool=self.name, state=state.name)


class Iis:
    """The pools, their workers and the hosting processes, following the service states."""

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.processes = node.processes
        self.pools = {name.lower(): AppPool(self, name) for name in node.config.app_pools}
        self._hosts: dict[str, Process] = {}
        self._booting = True

    def boot(self) -> None:
        """Pools Started with one warm worker each, hosting processes for the running services."""
        self.processes.add_fixed(4, "System")
        for svc in self.node.scm.all():
            if svc.state == ServiceState.Running:
                self._host_started(svc)
        if self.node.scm.state("W3SVC") == ServiceState.Running:
            for pool in self.pools.values():
                pool.state = PoolState.Started
                pool.acquire(0.0)
        self._booting = False

    def pool(self, name: str) -> AppPool | None:
        return self.pools.get(name.lower())

    @property
    def site_pool(self) -> AppPool:
        """The pool of the Default Web Site: the first configured pool."""
        return self.pools[self.node.config.app_pools[0].lower()]

    def serving(self) -> bool:
        """Whether W3SVC and WAS run, i.e. requests reach worker processes at all."""
        scm = self.node.scm
        return scm.state("W3SVC") == ServiceState.Running and scm.state("WAS") == ServiceState.Running

    def warmup_seconds(self) -> float:
        fault = self.node.fault(SlowWarmup)
        return 0.0 if fault is None or self._booting else float(fault.seconds)

    # --- pool control (WebAdministration) ---------------------------------------------------------

    def start_pool(self, pool: AppPool) -> None:
        if pool.state in (PoolState.Starting, PoolState.Stopping):
            raise PoolStateError(-2147023835, _com_text(1061, "80070425"))
        if pool.state == PoolState.Started:
            return
        if not self.serving():
            # WAS/W3SVC not running: the configuration system cannot reach the pool.
            raise PoolStateError(-2147023834, _com_text(1062, "80070426"))
        pool._set(PoolState.Started)

    def stop_pool(self, pool: AppPool) -> None:
        """Returns once the pool is Stopping; workers drain in the background."""
        if pool.state == PoolState.Stopped:
            raise PoolStateError(-2147023834, "Object on target path is already stopped.")
        if pool.state in (PoolState.Starting, PoolState.Stopping):
            raise PoolStateError(-2147023835, _com_text(1061, "80070425"))
        self.node.spawn(pool.stop_gracefully())

    def recycle_pool(self, pool: AppPool) -> None:
        if pool.state != PoolState.Started:
            raise PoolStateError(-2147023834, _com_text(1062, "80070426"))
        pool.recycle()

    # --- following the services ---------------------------------------------------------------

    async def service_stopping(self, name: str, hang: bool) -> None:
        """Stop work for W3SVC/WAS: the pools stop gracefully before the service reports Stopped.

        A hanging stop is what operators meet on real servers: a worker process that never exits
        holds W3SVC/WAS in StopPending. Killing the w3wp processes releases it (the kill-workers
        escalation); any other service hangs until its host is terminated."""
        if name.upper() not in ("W3SVC", "WAS"):
            if hang:
                await asyncio.Event().wait()
            return
        if hang:
            stuck = [w for p in self.pools.values() for w in p.workers()]
            if not stuck:
                await asyncio.Event().wait()
            await asyncio.gather(*(w.exited.wait() for w in stuck))
        await asyncio.gather(
            *(p.stop_gracefully() for p in self.pools.values() if p.state != PoolState.Stopped)
        )

    def service_changed(self, svc: Service, state: ServiceState, abrupt: bool) -> None:
        if state == ServiceState.Running:
            self._host_started(svc)
        elif state == ServiceState.Stopped:
            self._host_stopped(svc)
        if svc.name.upper() not in ("W3SVC", "WAS"):
            return
        if state == ServiceState.Stopped and abrupt:
            for pool in self.pools.values():
                pool.kill_workers("service_terminated")
                pool._set(PoolState.Stopped)
        elif state == ServiceState.Running and self.serving():
            for pool in self.pools.values():
                if pool.state == PoolState.Stopped:
                    pool._set(PoolState.Started)

    def _host_started(self, svc: Service) -> None:
        group = svc.spec.host
        if group is None or group in self._hosts:
            return
        host_group: str = group

        def killed(source: str) -> None:
            self._host_killed(host_group, source)

        if group == "inetinfo":
            proc = self.processes.spawn(
                "inetinfo", "C:\\Windows\\system32\\inetsrv\\inetinfo.exe", on_kill=killed
            )
        else:
            cmdline = f"C:\\Windows\\system32\\svchost.exe -k {group}"
            proc = self.processes.spawn("svchost", cmdline, protected=group == "rpcss", on_kill=killed)
        self._hosts[group] = proc

    def _host_stopped(self, svc: Service) -> None:
        group = svc.spec.host
        proc = self._hosts.get(group) if group is not None else None
        if group is None or proc is None:
            return
        hosted = [s for s in self.node.scm.all() if s.spec.host == group]
        if all(s.state == ServiceState.Stopped for s in hosted):
            del self._hosts[group]
            self.processes.exit(proc.pid)

    def _host_killed(self, group: str, source: str) -> None:
        self._hosts.pop(group, None)
        for svc in self.node.scm.all():
            if svc.spec.host == group:
                self.node.scm.terminate(svc.name, source)

    def host_pid(self, svc: Service) -> int:
        """The PID Win32_Service reports: the hosting process, 0 when stopped."""
        proc = self._hosts.get(svc.spec.host or "")
        return proc.pid if proc is not None and svc.state != ServiceState.Stopped else 0

    def kill_hosting_processes(self, source: str) -> None:
        """iisreset's forced stop: every w3wp, then the processes hosting the IIS services."""
        for pool in self.pools.values():
            pool.kill_workers(source)
        for group in SERVICE_HOSTS:
            proc = self._hosts.get(group)
            if proc is not None:
                self.processes.kill(proc.pid, source)


def _com_text(code: int, hex_code: str) -> str:
    return f"{WIN32_MESSAGES[code]} (Exception from HRESULT: 0x{hex_code.upper()})"
