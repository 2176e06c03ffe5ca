"""One WinRM session per node: a RunspacePool reused for all of that node's calls.

pypsrp is synchronous and its NTLM context is per host, so each session runs its calls one at a time
in a worker thread. Waiting for services happens in the coordinator (short calls, asyncio deadlines);
a call that must be cut short has its pipeline stopped with the PSRP stop signal, so a timeout never
leaves a thread blocked in a long remote call.
"""

from __future__ import annotations

import asyncio
import contextlib
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
            fut = in_daemon_thread(
                self._invoke_blocking, statements, cancel, name=f"winrm-{self.target.host}"
            )
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout)
            except asyncio.CancelledError:
                # Stopping at once: ask the worker to stop the pipeline, but do not wait for a
                # blocked request to return. The pool goes with it; a later call opens a new one.
                cancel.set()
                self._drop_pool()
                raise
            except TimeoutError:
                # Ask the worker to stop the pipeline, and wait for it so the thread is free again
                # and the next call does not race a half-finished one on the same pool.
                cancel.set()
                try:
                    await asyncio.wait_for(asyncio.shield(fut), self.target.operation_timeout + 5)
                except BaseException:  # we are already failing; the first error wins
                    self._drop_pool()
                raise CallTimedOut(
                    ErrorInfo(kind="transport", message=f"remote call did not finish within {timeout:g}s")
                ) from None

    async def close(self) -> None:
        async with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                await in_daemon_thread(_close_quietly, pool, name=f"winrm-{self.target.host}")

    def _drop_pool(self) -> None:
        # After a transport failure the pool's state is unknown; the next call reconnects.
        self._pool = None

    def _open_blocking(self) -> Any:
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

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
        pool = RunspacePool(wsman, configuration_name=t.configuration_name or "Microsoft.PowerShell")
        pool.open()
        return pool

    def _invoke_blocking(self, statements: Sequence[Sequence[Cmd]], cancel: threading.Event) -> Invocation:
        from pypsrp.complex_objects import PSInvocationState
        from pypsrp.powershell import PowerShell

        try:
            if self._pool is None:
                self._pool = self._open_blocking()
                self.connects += 1
            ps = PowerShell(self._pool)
            for index, pipeline in enumerate(statements):
                if index:
                    ps.add_statement()
                for cmd in pipeline:
                    ps.add_cmdlet(cmd.name)
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


def in_daemon_thread(fn: Callable[..., R], *args: Any, name: str) -> asyncio.Future[R]:
    """Run a blocking call in a thread of its own, as an awaitable.

    Daemon, unlike a ThreadPoolExecutor's workers (which the interpreter joins at exit): when the
    run is stopped at once, a call blocked on a dead or slow node must not hold the process."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[R] = loop.create_future()

    def settle(outcome: Callable[[Any], object], value: Any) -> None:
        def apply() -> None:
            if not fut.done():  # the waiter may have gone (cancelled)
                outcome(value)

        # ... or the loop itself (the process is stopping).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(apply)

    def target() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            settle(fut.set_exception, exc)
        else:
            settle(fut.set_result, result)

    threading.Thread(target=target, name=name, daemon=True).start()
    return fut
