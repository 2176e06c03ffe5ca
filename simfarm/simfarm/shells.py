"""The WinRM service's shells on one node: PSRP runspace pools and WinRS cmd shells.

`ShellHost.dispatch` turns one authenticated WS-Management request into a response or a WSManFault.
PSRP is psrpcore's server state machine fed with the fragments carried by Create (creationXml),
Command (Arguments) and Send; Receive hands back what the pool and its pipelines queued. The Windows
behaviour itself (cmdlets, cmd.exe) sits behind `powershell.run_pipeline` and `cmd.run_command_line`.

Output streams: every write goes to an `Outbox` at once, and a waiting Receive is woken, so a client
sees what a running command has written before the command ends.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psrpcore
import psrpcore.types as pstypes
from psrpcore import ServerPipeline, ServerRunspacePool
from psrpcore.types import PipelineResultTypes, PSInvocationState, PSRPMessageType

from simfarm import cmd as cmd_exe
from simfarm import powershell, wsman
from simfarm.accounts import same_account
from simfarm.config import Endpoint, WinRMConfig
from simfarm.node import SimNode
from simfarm.powershell import CommandSpec, PipelineFailed
from simfarm.wsman import NS, Request, StreamChunk

DEFAULT_CONFIGURATION = "microsoft.powershell"
# PSRP fragments are cut at this size so one always fits a Receive under pypsrp's default 150 KiB
# MaxEnvelopeSize once base64-encoded.
FRAGMENT_SIZE = 64 * 1024
_IDLE_TIMEOUT_S = 7200
# STATUS_CONTROL_C_EXIT: what a console process interrupted by ctrl_c exits with.
CTRL_C_EXIT = -1073741510


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


class Outbox:
    """Output produced for one Receive target and not yet handed out."""

    def __init__(self) -> None:
        self._chunks: deque[StreamChunk] = deque()
        self._changed = asyncio.Event()
        self.finished = False
        self.exit_code: int | None = None
        self.aborted = False

    def put(self, stream: str, data: bytes) -> None:
        if data:
            self._chunks.append(StreamChunk(stream, data))
            self._changed.set()

    def finish(self, exit_code: int | None = None) -> None:
        self.finished = True
        self.exit_code = exit_code
        self._changed.set()

    def abort(self) -> None:
        self.aborted = True
        self._changed.set()

    @property
    def ready(self) -> bool:
        return bool(self._chunks) or self.finished or self.aborted

    async def wait(self, timeout_s: float) -> bool:
        """Until there is something to return; False when `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        while not self.ready:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return self.ready
        return True

    def take(self, budget: int) -> tuple[list[StreamChunk], bool]:
        """Chunks whose base64 form fits `budget` bytes (at least one), and whether the stream ended."""
        out: list[StreamChunk] = []
        used = 0
        while self._chunks:
            size = (len(self._chunks[0].data) + 2) // 3 * 4
            if out and used + size > budget:
                break
            out.append(self._chunks.popleft())
            used += size
        return out, self.finished and not self._chunks


@dataclass
class Command:
    command_id: str
    outbox: Outbox = field(default_factory=Outbox)
    task: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


class Shell(abc.ABC):
    """What every shell has: identity, owner, commands, and a lifetime the node can end."""

    input_streams = "stdin"
    output_streams = "stdout stderr"

    def __init__(self, node: SimNode, shell_id: str, resource_uri: str, owner: str, client_ip: str) -> None:
        self.node = node
        self.shell_id = shell_id
        self.resource_uri = resource_uri
        self.owner = owner
        self.client_ip = client_ip
        self.created = time.monotonic()
        self.last_used = self.created
        self.commands: dict[str, Command] = {}

    def info(self) -> wsman.ShellInfo:
        now = time.monotonic()
        return wsman.ShellInfo(
            shell_id=self.shell_id,
            resource_uri=self.resource_uri,
            owner=self.owner,
            client_ip=self.client_ip,
            input_streams=self.input_streams,
            output_streams=self.output_streams,
            idle_timeout_s=_IDLE_TIMEOUT_S,
            run_time_s=int(now - self.created),
            inactivity_s=int(now - self.last_used),
        )

    def command(self, command_id: str | None) -> Command:
        found = self.commands.get((command_id or "").upper())
        if found is None:
            raise wsman.command_not_found()
        return found

    def outbox(self, command_id: str | None) -> Outbox:
        return self.command(command_id).outbox

    @abc.abstractmethod
    def start(self, request: Request) -> str:
        """Begin the command a Command request carries; its CommandId."""

    @abc.abstractmethod
    def send(self, request: Request) -> None:
        """Take the input a Send request carries."""

    def signal(self, command_id: str, code: str) -> None:
        # ctrl_c, the PowerShell stop code and terminate all interrupt a running command; only
        # terminate ends the command's operation (a finished one stays until then, as on Windows).
        command = self.command(command_id)
        command.cancel()
        if code.lower() == wsman.SIGNAL_TERMINATE:
            self.forget(command)

    def forget(self, command: Command) -> None:
        command.cancel()
        command.outbox.abort()
        self.commands.pop(command.command_id, None)

    def close(self) -> None:
        for command in list(self.commands.values()):
            self.forget(command)


# --- WinRS cmd shell ---------------------------------------------------------------------------------


class CmdShell(Shell):
    def start(self, request: Request) -> str:
        line = request.body
        assert line is not None
        executable = (line.findtext("rsp:Command", "", NS) or "").strip()
        arguments = [(a.text or "") for a in line.findall("rsp:Arguments", NS)]
        command_line = " ".join([executable, *arguments]).strip()
        command_id = (line.get("CommandId") or str(uuid.uuid4())).upper()
        command = Command(command_id)
        self.commands[command_id] = command
        command.task = asyncio.create_task(self._run(command, command_line))
        return command_id

    async def _run(self, command: Command, command_line: str) -> None:
        def writer(stream: str) -> Callable[[str], None]:
            return lambda text: command.outbox.put(stream, text.encode("cp437", errors="replace"))

        try:
            code = await cmd_exe.run_command_line(self.node, command_line, writer("stdout"), writer("stderr"))
        except asyncio.CancelledError:
            command.outbox.finish(CTRL_C_EXIT)
            return
        command.outbox.finish(code)

    def send(self, request: Request) -> None:
        # The simulated console programs read no standard input; WinRS accepts and discards it.
        for stream in request.body.findall("rsp:Stream", NS) if request.body is not None else []:
            self.command(stream.get("CommandId"))


# --- PSRP shell --------------------------------------------------------------------------------------


@dataclass
class PsrpCommand(Command):
    pipeline: ServerPipeline | None = None
    input: list[Any] = field(default_factory=list)


class PsrpShell(Shell):
    input_streams = "stdin pr"
    output_streams = "stdout"

    def __init__(
        self,
        node: SimNode,
        shell_id: str,
        resource_uri: str,
        owner: str,
        client_ip: str,
        endpoint: Endpoint | None,
        creation: bytes,
    ) -> None:
        super().__init__(node, shell_id, resource_uri, owner, client_ip)
        self.endpoint = endpoint
        self.pool = ServerRunspacePool(application_private_data=_private_data())
        self.pool_outbox = Outbox()
        self._by_pipeline: dict[uuid.UUID, PsrpCommand] = {}
        self._feed(creation)

    def outbox(self, command_id: str | None) -> Outbox:
        return self.pool_outbox if command_id is None else self.command(command_id).outbox

    def start(self, request: Request) -> str:
        line = request.body
        assert line is not None
        data = _b64(line.findtext("rsp:Arguments", "", NS) or "")
        pipeline_id = _fragment_pipeline_id(data)
        command_id = (line.get("CommandId") or str(pipeline_id)).upper()
        command = PsrpCommand(command_id, pipeline=ServerPipeline(self.pool, pipeline_id))
        self.commands[command_id] = command
        self._by_pipeline[pipeline_id] = command
        self._feed(data)
        return command_id

    def send(self, request: Request) -> None:
        for stream in request.body.findall("rsp:Stream", NS) if request.body is not None else []:
            if stream.get("CommandId"):
                self.command(stream.get("CommandId"))
            self._feed(_b64(stream.text or ""))

    def close(self) -> None:
        super().close()
        self.pool_outbox.abort()

    def forget(self, command: Command) -> None:
        super().forget(command)
        if isinstance(command, PsrpCommand) and command.pipeline is not None:
            self._by_pipeline.pop(command.pipeline.pipeline_id, None)
            self.pool.pipeline_table.pop(command.pipeline.pipeline_id, None)

    def _feed(self, data: bytes) -> None:
        self.pool.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, None))
        while (event := self.pool.next_event()) is not None:
            self._on_event(event)
        self.flush()

    def _on_event(self, event: Any) -> None:
        if isinstance(event, psrpcore.CreatePipelineEvent):
            command = self._by_pipeline[event.pipeline_id]
            if event.pipeline.no_input:
                self._launch(command)
        elif isinstance(event, psrpcore.PipelineInputEvent):
            self._by_pipeline[event.pipeline_id].input.append(event.data)
        elif isinstance(event, psrpcore.EndOfPipelineInputEvent):
            self._launch(self._by_pipeline[event.pipeline_id])
        elif isinstance(
            event,
            (psrpcore.SetMaxRunspacesEvent, psrpcore.SetMinRunspacesEvent, psrpcore.ResetRunspaceStateEvent),
        ):
            self.pool.runspace_availability_response(event.ci, True)
        elif isinstance(event, psrpcore.GetAvailableRunspacesEvent):
            self.pool.runspace_availability_response(event.ci, self.pool.max_runspaces)

    def flush(self) -> None:
        """Move what psrpcore queued into the outbox of its target (the pool or one pipeline)."""
        while (payload := self.pool.data_to_send(FRAGMENT_SIZE)) is not None:
            if payload.pipeline_id is None:
                self.pool_outbox.put("stdout", payload.data)
            elif (command := self._by_pipeline.get(payload.pipeline_id)) is not None:
                command.outbox.put("stdout", payload.data)

    def _launch(self, command: PsrpCommand) -> None:
        pipeline = command.pipeline
        assert pipeline is not None and pipeline.metadata is not None
        statements = _statements(pipeline.metadata.commands)
        command.task = asyncio.create_task(self._run(command, pipeline, statements))

    async def _run(
        self, command: PsrpCommand, pipeline: ServerPipeline, statements: list[list[psrpcore.Command]]
    ) -> None:
        # Windows' server (ServerPowerShellDriver) tells the client of a pipeline's state only when
        # it ends (Completed, Stopped, Failed), never of Running: a waiting Receive is answered by
        # the pipeline's first output or its end, not by its start.
        pipeline._change_state(PSInvocationState.Running, emit=False)
        try:
            for index, statement in enumerate(statements):
                sink = PipelineWriter(pipeline, statement[-1], self.flush)
                await powershell.run_pipeline(
                    self.node,
                    [_spec(c) for c in statement],
                    sink,
                    endpoint=self.endpoint,
                    input=command.input if index == 0 else (),
                )
        except asyncio.CancelledError:
            pipeline.stop()
        except PipelineFailed as failure:
            _fail(pipeline, failure.record)
        except Exception as exc:  # a defect in the simulation must still end the client's pipeline
            self.node.record("winrm_pipeline_crash", shell=self.shell_id, error=repr(exc))
            _fail(pipeline, _internal_error(exc))
        else:
            pipeline.complete()
        self.flush()
        command.outbox.finish()


class PipelineWriter:
    """The PipelineSink of one statement: psrpcore messages, routed by the statement's merge flags."""

    def __init__(self, pipeline: ServerPipeline, last: psrpcore.Command, flush: Callable[[], None]) -> None:
        self._pipeline = pipeline
        self._flush = flush
        self._error = last.merge_error
        self._warning = last.merge_warning
        self._verbose = last.merge_verbose

    def write_output(self, value: Any) -> None:
        self._pipeline.write_output(value)
        self._flush()

    def write_error(self, record: pstypes.ErrorRecord) -> None:
        self._route(self._error, record, PSRPMessageType.ErrorRecord)

    def write_warning(self, message: str) -> None:
        self._route(self._warning, pstypes.WarningRecord(Message=message), PSRPMessageType.WarningRecord)

    def write_verbose(self, message: str) -> None:
        self._route(self._verbose, pstypes.VerboseRecord(Message=message), PSRPMessageType.VerboseRecord)

    def _route(self, merge: Any, record: Any, message_type: PSRPMessageType) -> None:
        if merge == PipelineResultTypes.Null:
            return
        if merge == PipelineResultTypes.Output:
            self._pipeline.write_output(record)
        else:
            self._pipeline.prepare_message(record, message_type=message_type)
        self._flush()


def _fail(pipeline: ServerPipeline, record: pstypes.ErrorRecord) -> None:
    # psrpcore has no public way to end a pipeline Failed; its own stop() goes through _change_state.
    pipeline._change_state(PSInvocationState.Failed, error=record)


def _internal_error(exc: Exception) -> pstypes.ErrorRecord:
    return pstypes.ErrorRecord(
        Exception=pstypes.NETException(Message=str(exc) or type(exc).__name__),
        CategoryInfo=pstypes.ErrorCategoryInfo(Category=pstypes.ErrorCategory.NotSpecified),
        FullyQualifiedErrorId="System.Management.Automation.RuntimeException",
    )


def _spec(command: psrpcore.Command) -> CommandSpec:
    return CommandSpec(command.command_text, command.is_script, tuple(command.parameters))


def _statements(commands: Sequence[psrpcore.Command]) -> list[list[psrpcore.Command]]:
    out: list[list[psrpcore.Command]] = [[]]
    for c in commands:
        out[-1].append(c)
        if c.end_of_statement:
            out.append([])
    return [s for s in out if s]


def _fragment_pipeline_id(data: bytes) -> uuid.UUID:
    # A fragment (MS-PSRP 2.2.4) is ObjectId(8) FragmentId(8) Flags(1) Length(4), then the message:
    # Destination(4) MessageType(4) RPID(16) PID(16), GUIDs in .NET byte order.
    if len(data) < 21 + 40:
        raise wsman.invalid_xml()
    return uuid.UUID(bytes_le=data[21 + 24 : 21 + 40])


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise wsman.invalid_xml() from None


def _private_data() -> dict[str, Any]:
    return {
        "PSVersionTable": {
            "PSVersion": pstypes.PSVersion("5.1.17763.1"),
            "PSEdition": "Desktop",
            "BuildVersion": pstypes.PSVersion("10.0.17763.1"),
            "CLRVersion": pstypes.PSVersion("4.0.30319.42000"),
            "WSManStackVersion": pstypes.PSVersion("3.0"),
        }
    }


# --- the shell table ----------------------------------------------------------------------------------


class ShellHost:
    """The shells of one node's WinRM service, with its per-user quotas."""

    def __init__(self, node: SimNode, quotas: WinRMConfig) -> None:
        self.node = node
        self.quotas = quotas
        self.shells: dict[str, Shell] = {}

    def close_all(self) -> list[asyncio.Task[None]]:
        """The WinRM service stopped: every shell and command is gone. Returns the interrupted work."""
        interrupted = [
            c.task for s in self.shells.values() for c in s.commands.values() if c.task is not None
        ]
        for shell in list(self.shells.values()):
            shell.close()
        self.shells.clear()
        return interrupted

    def _operations(self, user: str) -> int:
        mine = [s for s in self.shells.values() if same_account(s.owner, user)]
        return len(mine) + sum(len(s.commands) for s in mine)

    def _shell(self, request: Request) -> Shell:
        shell = self.shells.get((request.shell_id or "").upper())
        if shell is None:
            raise wsman.shell_not_found(request.shell_id or "")
        shell.last_used = time.monotonic()
        return shell

    def _check_operations(self, user: str) -> None:
        limit = self.quotas.max_concurrent_operations_per_user
        if self._operations(user) >= limit:
            raise wsman.max_operations_exceeded(limit)

    async def dispatch(self, request: Request, user: str, client_ip: str, endpoint_url: str) -> bytes:
        action = request.action
        if action == wsman.CREATE:
            return self._create(request, user, client_ip, endpoint_url)
        if action == wsman.GET:
            return self._get(request)
        shell = self._shell(request)
        if action == wsman.DELETE:
            shell.close()
            del self.shells[shell.shell_id]
            return wsman.deleted(request)
        if action == wsman.COMMAND and request.body is not None:
            self._check_operations(user)
            return wsman.command_started(request, shell.start(request))
        if action == wsman.SEND:
            shell.send(request)
            return wsman.sent(request)
        if action == wsman.SIGNAL and request.body is not None:
            shell.signal(
                request.body.get("CommandId") or "", request.body.findtext("rsp:Code", "", NS).strip()
            )
            return wsman.signalled(request)
        if action == wsman.RECEIVE and request.body is not None:
            return await self._receive(shell, request)
        raise wsman.action_not_supported(action)

    def _create(self, request: Request, user: str, client_ip: str, endpoint_url: str) -> bytes:
        body = request.body
        if body is None or body.tag != _q("rsp", "Shell"):
            raise wsman.invalid_xml()
        uri = request.resource_uri
        mine = sum(1 for s in self.shells.values() if same_account(s.owner, user))
        if mine >= self.quotas.max_shells_per_user:
            raise wsman.max_shells_exceeded(self.quotas.max_shells_per_user)
        self._check_operations(user)
        shell_id = (body.get("ShellId") or str(uuid.uuid4())).upper()
        shell: Shell
        if uri.lower() == wsman.CMD_RESOURCE:
            shell = CmdShell(self.node, shell_id, uri, user, client_ip)
        elif uri.lower().startswith(wsman.POWERSHELL_PREFIX):
            name = uri[len(wsman.POWERSHELL_PREFIX) :]
            endpoint = None if name.lower() == DEFAULT_CONFIGURATION else self.node.endpoint(name)
            if endpoint is None and name.lower() != DEFAULT_CONFIGURATION:
                raise wsman.resource_not_found(uri)
            creation = body.find("{http://schemas.microsoft.com/powershell}creationXml")
            if creation is None:
                raise wsman.invalid_xml()
            shell = PsrpShell(self.node, shell_id, uri, user, client_ip, endpoint, _b64(creation.text or ""))
        else:
            raise wsman.resource_not_found(uri)
        self.shells[shell_id] = shell
        return wsman.created(request, shell.info(), endpoint_url)

    def _get(self, request: Request) -> bytes:
        if request.resource_uri.lower() == wsman.CONFIG_RESOURCE:
            return wsman.config(request, self.quotas.max_envelope_size_kb, self.quotas.max_timeout_ms)
        if request.resource_uri.lower() == wsman.SHELL_RESOURCE:
            return wsman.shell_state(request, self._shell(request).info(), "Connected")
        raise wsman.resource_not_found(request.resource_uri)

    async def _receive(self, shell: Shell, request: Request) -> bytes:
        assert request.body is not None
        desired = request.body.find("rsp:DesiredStream", NS)
        command_id = desired.get("CommandId") if desired is not None else None
        outbox = shell.outbox(command_id)
        max_s = self.quotas.max_timeout_ms / 1000
        timeout = min(request.operation_timeout_s or max_s, max_s)
        if not await outbox.wait(timeout):
            raise wsman.timed_out()
        if outbox.aborted:
            raise wsman.operation_aborted()
        budget = (
            request.max_envelope_size or self.quotas.max_envelope_size_kb * 1024
        ) - wsman.RESPONSE_OVERHEAD
        chunks, done = outbox.take(budget)
        if command_id is None:
            return wsman.received(request, None, chunks, done=False)
        if done and isinstance(shell, CmdShell):
            streams = (desired.text or "").split() if desired is not None else []
            chunks += [StreamChunk(name, b"", end=True) for name in streams]
        return wsman.received(request, command_id.upper(), chunks, done=done, exit_code=outbox.exit_code)
