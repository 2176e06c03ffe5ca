"""cmd.exe in the WinRS shell: `net`, `sc`, `iisreset`, `powershell`, `hostname`, chains and `cmd /c`.

Output is streamed through the callbacks as the command produces it, with Windows line endings.
Cancelling the task is Ctrl+C: a command stops where it is, and any service transition it started
goes on, as it does on Windows.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from psrpcore.types import ErrorRecord

from simfarm.config import AccessDenied
from simfarm.powershell.engine import run_pipeline
from simfarm.powershell.pipeline import CommandSpec, PipelineFailed
from simfarm.powershell.utility import format_table
from simfarm.scm import PENDING, Service, ServiceState, Win32Error

if TYPE_CHECKING:
    from simfarm.node import SimNode

Write = Callable[[str], None]

# How long `net` waits for a pending service before giving up, and how often it prints a dot.
NET_WAIT_S = 30.0
NET_DOT_S = 1.0
# iisreset's documented default timeouts.
IISRESET_RESTART_TIMEOUT_S = 20.0
IISRESET_STOP_TIMEOUT_S = 60.0

NOT_RECOGNIZED = (
    "'{0}' is not recognized as an internal or external command,\r\noperable program or batch file.\r\n"
)
IISRESET_ACCESS_DENIED = (
    "Access denied, you must be an administrator of the remote computer to use this\r\n"
    "command. Either have your account added to the administrator local group of\r\n"
    "the remote computer or to the domain administrator global group.\r\n"
)


async def run_command_line(node: SimNode, command_line: str, stdout: Write, stderr: Write) -> int:
    """Run one cmd.exe command line; returns its exit code."""
    return await _Shell(node, stdout, stderr).line(command_line)


def _split_chain(line: str) -> list[tuple[str, str]]:
    """(operator before, command) pairs for `&`, `&&` and `||`, outside double quotes."""
    parts: list[tuple[str, str]] = []
    op, start, i, quoted = "", 0, 0, False
    while i < len(line):
        c = line[i]
        if c == '"':
            quoted = not quoted
        elif not quoted and c in "&|":
            two = line[i : i + 2]
            token = two if two in ("&&", "||") else c
            if token == "|":
                i += 1
                continue
            parts.append((op, line[start:i].strip()))
            op, i = token, i + len(token)
            start = i
            continue
        i += 1
    parts.append((op, line[start:].strip()))
    return parts


def _words(command: str) -> list[str]:
    return [w.strip('"') for w in re.findall(r'"[^"]*"|\S+', command)]


class _Shell:
    def __init__(self, node: SimNode, out: Write, err: Write) -> None:
        self.node = node
        self.out = out
        self.err = err

    async def line(self, command_line: str) -> int:
        code = 0
        for op, command in _split_chain(command_line):
            if (op == "&&" and code != 0) or (op == "||" and code == 0):
                continue
            code = await self.command(command) if command else code
        return code

    async def command(self, command: str) -> int:
        words = _words(command)
        if not words:
            return 0
        verb = words[0].lower().removesuffix(".exe")
        if verb == "cmd":
            rest = re.split(r"(?i)\s/[ck]\s+", " " + command + " ", maxsplit=1)
            return await self.line(rest[1].strip()) if len(rest) == 2 else 0
        if verb in ("net", "net1"):
            return await _Net(self).run(words[1:])
        if verb == "sc":
            return await _Sc(self).run(words[1:])
        if verb == "iisreset":
            return await _IisReset(self).run(words[1:])
        if verb == "powershell" or verb == "pwsh":
            return await self.powershell(command)
        if verb == "hostname":
            self.out(self.node.name + "\r\n")
            return 0
        if verb == "echo":
            self.out(command.split(None, 1)[1] + "\r\n" if len(words) > 1 else "ECHO is on.\r\n")
            return 0
        self.err(NOT_RECOGNIZED.format(words[0]))
        return 1

    async def powershell(self, command: str) -> int:
        words = _words(command)
        text = ""
        for i, word in enumerate(words[1:], start=1):
            flag = word.lower()
            if flag in ("-encodedcommand", "-enc", "-e", "-ec") and i + 1 < len(words):
                text = base64.b64decode(words[i + 1]).decode("utf-16-le")
                break
            if flag in ("-command", "-c"):
                text = command.split(word, 1)[1].strip().strip('"')
                break
        sink = _ConsoleSink(self.out, self.err)
        try:
            await run_pipeline(self.node, [CommandSpec(text, is_script=True)], sink, endpoint=None)
        except PipelineFailed as exc:
            sink.write_error(exc.record)
        if sink.output:
            self.out("\r\n".join(format_table(sink.output)) + "\r\n")
        return 1 if sink.failed else 0


class _ConsoleSink:
    """How powershell.exe renders streams on its console."""

    def __init__(self, out: Write, err: Write) -> None:
        self.output: list[Any] = []
        self.failed = False
        self._out = out
        self._err = err

    def write_output(self, value: Any) -> None:
        self.output.append(value)

    def write_error(self, record: ErrorRecord) -> None:
        self.failed = True
        info = record.CategoryInfo
        self._err(
            f"{record}\r\n"
            f"    + CategoryInfo          : {info.Category.name}: ({info.TargetName}:{info.TargetType}) "
            f"[{info.Activity}], {info.Reason}\r\n"
            f"    + FullyQualifiedErrorId : {record.FullyQualifiedErrorId}\r\n\r\n"
        )

    def write_warning(self, message: str) -> None:
        self._out(f"WARNING: {message}\r\n")

    def write_verbose(self, message: str) -> None:
        self._out(f"VERBOSE: {message}\r\n")


def _find(node: SimNode, name: str) -> Service | None:
    """net accepts a service name or a display name."""
    svc = node.scm.find(name)
    if svc is not None:
        return svc
    return next((s for s in node.scm.all() if s.display_name.lower() == name.lower()), None)


class _Net:
    def __init__(self, shell: _Shell) -> None:
        self.sh = shell
        self.scm = shell.node.scm

    async def run(self, args: list[str]) -> int:
        switches = {a.lower() for a in args if a.startswith("/")}
        names = [a for a in args if not a.startswith("/")]
        if len(names) < 2 or names[0].lower() not in ("start", "stop"):
            self.sh.err("The syntax of this command is:\r\n\r\nNET\r\n    [ START | STOP ] service\r\n\r\n")
            return 1
        svc = _find(self.sh.node, " ".join(names[1:]))
        if svc is None:
            self.sh.err(
                "The service name is invalid.\r\n\r\n"
                "More help is available by typing NET HELPMSG 2185.\r\n\r\n"
            )
            return 2
        if names[0].lower() == "start":
            return await self.start(svc)
        return await self.stop_with_dependents(svc, "/y" in switches)

    async def stop_with_dependents(self, svc: Service, yes: bool) -> int:
        active = [d for d in self.scm.dependents(svc.name) if d.state != ServiceState.Stopped]
        if active and svc.state != ServiceState.Stopped:
            self.sh.out(
                f"The following services are dependent on the {svc.display_name} service.\r\n"
                f"Stopping the {svc.display_name} service will also stop these services.\r\n\r\n"
                + "".join(f"   {d.display_name}\r\n" for d in active)
                + "\r\n"
            )
            if not yes:
                # WinRS gives net no console input: the prompt reads end-of-file.
                self.sh.out("Do you want to continue this operation? (Y/N) [N]: \r\n")
                self.sh.err("No valid response was provided.\r\n")
                return 2
            for dep in active:
                code = await self.stop(dep)
                if code != 0:
                    return code
        return await self.stop(svc)

    async def stop(self, svc: Service) -> int:
        try:
            self.scm.control_stop(svc.name, "cmd")
        except Win32Error as exc:
            return self.error(svc, exc, stopping=True)
        self.sh.out(f"The {svc.display_name} service is stopping.")
        if await self.dots(svc) and svc.state == ServiceState.Stopped:
            self.sh.out(f"\r\nThe {svc.display_name} service was stopped successfully.\r\n\r\n")
            return 0
        self.sh.out("\r\n")
        self.sh.err(f"The {svc.display_name} service could not be stopped.\r\n\r\n")
        return 2

    async def start(self, svc: Service) -> int:
        try:
            await self.scm.start(svc.name, "cmd")
        except Win32Error as exc:
            return self.error(svc, exc, stopping=False)
        self.sh.out(f"The {svc.display_name} service is starting.")
        if await self.dots(svc) and svc.state == ServiceState.Running:
            self.sh.out(f"\r\nThe {svc.display_name} service was started successfully.\r\n\r\n")
            return 0
        self.sh.out("\r\n")
        self.sh.err(f"The {svc.display_name} service could not be started.\r\n\r\n")
        return 2

    async def dots(self, svc: Service) -> bool:
        """Wait for the pending state to end, a dot per second; False after NET_WAIT_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NET_WAIT_S
        while svc.state in PENDING:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if not await self.scm.wait_settled(svc.name, min(NET_DOT_S, remaining)):
                self.sh.out(".")
        return True

    def error(self, svc: Service, exc: Win32Error, *, stopping: bool) -> int:
        help_texts = {
            (1062, True): (f"The {svc.display_name} service is not started.", 3521),
            (1061, True): ("The service could not be controlled in its present state.", 2189),
            (1061, False): ("The service could not be controlled in its present state.", 2189),
            (1052, True): ("The requested pause, continue, or stop is not valid for this service.", 2191),
            (1056, False): ("The requested service has already been started.", 2182),
        }
        known = help_texts.get((exc.code, stopping))
        if known is not None:
            self.sh.err(f"{known[0]}\r\n\r\nMore help is available by typing NET HELPMSG {known[1]}.\r\n\r\n")
        else:
            self.sh.err(f"System error {exc.code} has occurred.\r\n\r\n{exc.message}\r\n\r\n")
        return 2


_SC_STATES = {
    ServiceState.Stopped: "STOPPED",
    ServiceState.StartPending: "START_PENDING",
    ServiceState.StopPending: "STOP_PENDING",
    ServiceState.Running: "RUNNING",
}


class _Sc:
    def __init__(self, shell: _Shell) -> None:
        self.sh = shell
        self.scm = shell.node.scm

    async def run(self, args: list[str]) -> int:
        if not args or args[0].lower() not in ("query", "stop", "start"):
            self.sh.err("ERROR:  Unrecognized command\r\n")
            return 1
        verb = args[0].lower()
        if verb == "query" and len(args) == 1:
            for each in self.scm.all():
                if not each.spec.driver:
                    self.sh.out(self.block(each))
            return 0
        svc = self.scm.find(args[1]) if len(args) > 1 else None
        if svc is None:
            api = "EnumQueryServicesStatus:OpenService" if verb == "query" else "OpenService"
            return self.failed(api, Win32Error(1060))
        if verb == "query":
            self.sh.out(self.block(svc))
            return 0
        try:
            if verb == "stop":
                self.scm.control_stop(svc.name, "cmd")
            else:
                await self.scm.start(svc.name, "cmd")
        except Win32Error as exc:
            if exc.code == 5:
                return self.failed("OpenService", exc)
            return self.failed("ControlService" if verb == "stop" else "StartService", exc)
        self.sh.out(self.block(svc))
        return 0

    def failed(self, api: str, exc: Win32Error) -> int:
        self.sh.err(f"[SC] {api} FAILED {exc.code}:\r\n\r\n{exc.message}\r\n\r\n")
        return exc.code

    def block(self, svc: Service) -> str:
        running = svc.state == ServiceState.Running
        stoppable = "STOPPABLE" if running and svc.spec.stoppable else "NOT_STOPPABLE"
        shutdown = "ACCEPTS_SHUTDOWN" if running else "IGNORES_SHUTDOWN"
        kind = "1  KERNEL_DRIVER" if svc.spec.driver else "20  WIN32_SHARE_PROCESS"
        return (
            f"\r\nSERVICE_NAME: {svc.name} \r\n"
            f"        TYPE               : {kind}  \r\n"
            f"        STATE              : {int(svc.state)}  {_SC_STATES[svc.state]} \r\n"
            f"                                ({stoppable}, NOT_PAUSABLE, {shutdown})\r\n"
            f"        WIN32_EXIT_CODE    : {svc.exit_code}  (0x{svc.exit_code:x})\r\n"
            "        SERVICE_EXIT_CODE  : 0  (0x0)\r\n"
            "        CHECKPOINT         : 0x0\r\n"
            "        WAIT_HINT          : 0x0\r\n"
        )


class _IisReset:
    """iisreset.exe: stops the IIS services, by default killing their processes after the timeout."""

    def __init__(self, shell: _Shell) -> None:
        self.sh = shell
        self.node = shell.node
        self.scm = shell.node.scm

    def iis_services(self) -> list[Service]:
        """The IIS services in stop order: WAS's dependents (W3SVC first of all), WAS, IISADMIN."""
        ordered = [*self.scm.dependents("WAS"), self.scm.get("WAS")]
        admin = self.scm.find("IISADMIN")
        return [*ordered, admin] if admin is not None else ordered

    async def run(self, args: list[str]) -> int:
        switches = [a.lower() for a in args]
        timeout: float | None = None
        for s in switches:
            if s.startswith("/timeout:"):
                try:
                    timeout = float(s.split(":", 1)[1])
                except ValueError:
                    timeout = None
        force = "/noforce" not in switches
        if "/status" in switches:
            for svc in reversed(self.iis_services()):
                if svc.name == "W3LOGSVC":
                    continue
                state = {"StartPending": "Start Pending", "StopPending": "Stop Pending"}.get(
                    svc.state.name, svc.state.name
                )
                self.sh.out(f"Status for {svc.display_name} ( {svc.name} ) : {state}\r\n")
            return 0
        self.node.record("iisreset", args=args)
        if "/start" in switches:
            return await self.start(restarted=False)
        if "/stop" in switches:
            return 0 if await self.stop(timeout or IISRESET_STOP_TIMEOUT_S, force) else 1
        running = [s.name for s in self.iis_services() if s.state != ServiceState.Stopped]
        if not await self.stop(timeout or IISRESET_RESTART_TIMEOUT_S, force):
            return 1
        return await self.start(restarted=True, names=running)

    async def stop(self, grace: float, force: bool) -> bool:
        self.sh.out("Attempting stop...\r\n")
        services = self.iis_services()
        if any(self.node.has_fault(AccessDenied, s.name) for s in services):
            self.sh.err(IISRESET_ACCESS_DENIED)
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for svc in services:
            # One after the other, dependents first: a stop control with a dependent still stopping is 1051.
            if svc.state == ServiceState.Running:
                try:
                    self.scm.control_stop(svc.name, "iisreset")
                except Win32Error:
                    # 1061 and friends: the graceful stop failed; the timeout decides what follows.
                    continue
            if not await self.scm.wait_for(svc.name, ServiceState.Stopped, max(0.0, deadline - loop.time())):
                break
        if not all(s.state == ServiceState.Stopped for s in services):
            if not force:
                self.sh.err(
                    "Restart attempt failed.\r\n"
                    "The IIS Admin Service or the World Wide Web Publishing Service, or a "
                    "service dependent on them failed to stop.\r\n"
                )
                return False
            self.node.iis.kill_hosting_processes("iisreset")
            for svc in services:
                self.scm.terminate(svc.name, "iisreset")
        self.sh.out("Internet services successfully stopped\r\n")
        return True

    async def start(self, *, restarted: bool, names: list[str] | None = None) -> int:
        self.sh.out("Attempting start...\r\n")
        wanted = names if names is not None else [s.name for s in self.iis_services() if s.name != "W3LOGSVC"]
        for svc in reversed(self.iis_services()):
            if svc.name not in wanted:
                continue
            try:
                await self.scm.start(svc.name, "iisreset")
            except Win32Error as exc:
                if exc.code != 1056:
                    self.sh.err(f"Restart attempt failed.\r\n{exc.message}\r\n")
                    return 1
            await self.scm.wait_for(svc.name, ServiceState.Running, IISRESET_RESTART_TIMEOUT_S)
        self.sh.out(f"Internet services successfully {'restarted' if restarted else 'started'}\r\n")
        return 0
