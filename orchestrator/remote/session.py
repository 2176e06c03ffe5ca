"""One WinRM session per node: a RunspacePool reused for all of that node's calls.

pypsrp is synchronous and its NTLM context is per host, so each session runs its calls one at a time
in a worker thread of its own, started with the first call and kept for the session's lifetime
(a thread per call cost more than some calls). Waiting happens in the coordinator (asyncio
deadlines); a call that must be cut short has its pipeline stopped with the PSRP stop signal, so a
timeout never leaves a thread blocked in a long remote call.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orchestrator.remote.errors import CallTimedOut, RemoteError, classify_exception, classify_record
from orchestrator.results import ErrorInfo

R = TypeVar("R")

# How long one Receive may wait on the node before the worker looks at its cancel flag again.
_POLL_SECONDS = 1
# A dropped connection is retried after these pauses (the pool is rebuilt); auth errors are not.
_TRANSPORT_RETRIES = (0.5, 1.5)


@dataclass(frozen=True)
class Target:
    """Where and how to reach one node's WinRM endpoint."""

    host: str
    port: int
    scheme: str  # http | https
    auth: str  # ntlm | negotiate | kerberos | basic | certificate
    username: str | None
    password: str | None = field(repr=False)
    cert_validation: bool | str = True  # True, False or a CA bundle path
    configuration_name: str | None = None
    connect_timeout: float = 10
    operation_timeout: float = 20
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class Cmd:
    """A cmdlet with parameters; never script text, so JEA NoLanguage endpoints accept it."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    switches: tuple[str, ...] = ()

    @classmethod
    def of(cls, name: str, *switches: str, **params: Any) -> Cmd:
        return cls(name, tuple(params.items()), switches)


@dataclass
class Invocation:
    output: list[Any]
    errors: list[ErrorInfo]
    failed: bool  # the pipeline ended Failed (a terminating error)


class Session:
    """A node's WinRM session. Not thread-safe by design: one call at a time, serialised here."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._lock = asyncio.Lock()
        self._pool: Any = None
        self._worker: _Worker | None = None
        self.connects = 0  # pools opened: more than one means the node dropped us at least once

    async def invoke(self, *pipeline: Cmd, timeout: float, retry: bool = True) -> Invocation:
        """Run one pipeline (`A | B`). Raises RemoteError (classified) on transport or auth failures.

        Transport failures (connection refused or reset) are retried with backoff on a fresh pool,
        because every call the product makes is safe to repeat; pass `retry=False` for one that is
        not (creating a process)."""
        return await self.invoke_statements([pipeline], timeout=timeout, retry=retry)

    async def invoke_statements(
        self, statements: Sequence[Sequence[Cmd]], *, timeout: float, retry: bool = True
    ) -> Invocation:
        """Several statements (`A; B | C; D`) in one remote pipeline: one Command and its Receives
        instead of one round per statement. Still cmdlets only, which NoLanguage endpoints accept.
        Output and errors of all statements come back in order, in one Invocation."""
        pauses = list(_TRANSPORT_RETRIES) if retry else []
        while True:
            try:
                return await self._invoke_once(statements, timeout)
            except CallTimedOut:
                raise
            except RemoteError as err:
                if err.kind != "transport" or not pauses:
                    raise
            await asyncio.sleep(pauses.pop(0))

    async def _invoke_once(self, statements: Sequence[Sequence[Cmd]], timeout: float) -> Invocation:
        async with self._lock:
            cancel = threading.Event()
            fut = self._worker_for_call().submit(self._invoke_blocking, statements, cancel)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
                # that arrives just as the call answers, and the caller's own timeout is lost.
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(fut)
            except asyncio.CancelledError:
                # Stopping at once: ask the worker to stop the pipeline, but do not wait for a
                # blocked request to return. The pool and the worker go with it; a later call opens
                # a new pool in a new thread.
                cancel.set()
                self._abandon()
                raise
            except TimeoutError:
                # Ask the worker to stop the pipeline, and wait for it so the thread is free again
                # and the next call does not race a half-finished one on the same pool.
                cancel.set()
                try:
                    async with asyncio.timeout(self.target.operation_timeout + 5):
                        await asyncio.shield(fut)
                except BaseException:  # we are already failing; the first error wins
                    self._abandon()
                raise CallTimedOut(
                    ErrorInfo(kind="transport", message=f"remote call did not finish within {timeout:g}s")
                ) from None

    async def close(self) -> None:
        async with self._lock:
            pool, self._pool = self._pool, None
            worker, self._worker = self._worker, None
            if worker is None:
                return
            if pool is not None:
                await worker.submit(_close_quietly, pool)
            worker.retire()

    def _worker_for_call(self) -> _Worker:
        if self._worker is None:
            self._worker = _Worker(f"winrm-{self.target.host}")
        return self._worker

    def _abandon(self) -> None:
        # The thread may be blocked in a request for a while: it finishes that call and exits.
        self._drop_pool()
        if self._worker is not None:
            self._worker.retire()
            self._worker = None

    def _drop_pool(self) -> None:
        # After a transport failure the pool's state is unknown; the next call reconnects.
        self._pool = None

    def _open_blocking(self) -> Any:
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        from orchestrator.remote.clixml import LeanSerializer

        t = self.target
        kwargs: dict[str, Any] = {}
        if t.auth == "certificate":
            kwargs = {"certificate_pem": t.cert_file, "certificate_key_pem": t.key_file}
        wsman = WSMan(
            t.host,
            port=t.port,
            username=t.username,
            password=t.password,
            ssl=t.scheme == "https",
            auth=t.auth,
            # pypsrp hands this to requests' `verify`, which takes a CA bundle path as well as a bool.
            cert_validation=t.cert_validation,  # type: ignore[arg-type]
            encryption="always" if t.scheme == "http" else "auto",
            connection_timeout=int(t.connect_timeout),
            operation_timeout=int(t.operation_timeout),
            read_timeout=int(t.operation_timeout) + 10,
            no_proxy=True,
            **kwargs,
        )
        # requests reads the proxy environment again on every request unless trust_env is off; the
        # endpoint is always reached directly (no_proxy), so nothing there applies.
        transport = wsman.transport
        transport.session = transport._build_session()
        transport.session.trust_env = False
        pool = RunspacePool(wsman, configuration_name=t.configuration_name or "Microsoft.PowerShell")
        # pypsrp re-serializes every element it decodes; output objects are decoded in one walk.
        lean = LeanSerializer()
        pool._serializer = lean
        pool._fragmenter.serializer = lean
        pool.open()
        return pool

    def _invoke_blocking(self, statements: Sequence[Sequence[Cmd]], cancel: threading.Event) -> Invocation:
        from pypsrp.complex_objects import PSInvocationState
        from pypsrp.powershell import PowerShell

        from orchestrator.remote.clixml import LeanCommand

        try:
            if self._pool is None:
                self._pool = self._open_blocking()
                self.connects += 1
            ps = PowerShell(self._pool)
            version = self._pool.protocol_version or ""
            for index, pipeline in enumerate(statements):
                if index:
                    ps.add_statement()
                for cmd in pipeline:
                    ps.add_command(LeanCommand(cmd.name, protocol_version=version, is_script=False))
                    for name, value in cmd.params:
                        ps.add_parameter(name, value)
                    for switch in cmd.switches:
                        ps.add_parameter(switch, True)
            ps.begin_invoke()
            while ps.state == PSInvocationState.RUNNING:
                if cancel.is_set():
                    ps.stop()
                    break
                ps.poll_invoke(timeout=_POLL_SECONDS)
        except Exception as exc:
            self._drop_pool()
            raise RemoteError(classify_exception(exc)) from exc
        errors = [classify_record(r) for r in ps.streams.error]
        return Invocation(output=list(ps.output), errors=errors, failed=ps.state == PSInvocationState.FAILED)


def _close_quietly(pool: Any) -> None:
    # The node may already be gone; closing is best effort.
    with contextlib.suppress(Exception):
        pool.close()


class _Worker:
    """One daemon thread running a session's blocking calls in order.

    Daemon, unlike a ThreadPoolExecutor's workers (which the interpreter joins at exit): when the
    run is stopped at once, a call blocked on a dead or slow node must not hold the process."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._jobs.put(_Job(fn, args, loop, fut))
        return fut

    def retire(self) -> None:
        """Exit once the calls already submitted are done."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                result = job.fn(*job.args)
            except BaseException as exc:
                job.settle(job.future.set_exception, exc)
            else:
                job.settle(job.future.set_result, result)


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]

    def settle(self, outcome: Callable[[Any], object], value: Any) -> None:
        def apply() -> None:
            if not self.future.done():  # the waiter may have gone (cancelled)
                outcome(value)

        # ... or the loop itself (the process is stopping).
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(apply)
