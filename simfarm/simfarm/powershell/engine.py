"""Runs a PSRP pipeline on a simulated node: command lookup, JEA visibility, scripts, pipeline input.

Pipelines run command by command: each command's output is the next one's input once it finishes.
Real PowerShell streams objects through; for this cmdlet set the difference shows only in the
interleaving of warnings with output.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from simfarm.powershell import cim, errors, processes, services, utility, webadministration
from simfarm.powershell.cmdlet import Cmdlet, Invocation
from simfarm.powershell.parser import Literal, ParseError, Statement, parse
from simfarm.powershell.pipeline import CommandSpec, PipelineFailed, PipelineSink

if TYPE_CHECKING:
    from simfarm.config import Endpoint
    from simfarm.node import SimNode

CMDLETS: dict[str, Cmdlet] = {
    c.name.lower(): c
    for c in (
        *services.CMDLETS,
        *processes.CMDLETS,
        *cim.CMDLETS,
        *webadministration.CMDLETS,
        *utility.CMDLETS,
    )
}


async def run_pipeline(
    node: SimNode,
    commands: Sequence[CommandSpec],
    sink: PipelineSink,
    *,
    endpoint: Endpoint | None,
    input: Sequence[Any] = (),
) -> None:
    """Run one pipeline on `node`; cancelling the task is the PSRP stop signal.

    Raises PipelineFailed for a terminating error. State stays consistent on cancellation because
    every service or pool transition runs on the node's own tasks, not on this one.
    """
    session = _Session(node, sink, endpoint)
    output = await session.run_elements(list(commands), list(input), in_script=False)
    for value in output:
        sink.write_output(value)


class _Session:
    def __init__(self, node: SimNode, sink: PipelineSink, endpoint: Endpoint | None) -> None:
        self.node = node
        self.sink = sink
        self.endpoint = endpoint

    def lookup(self, name: str) -> Cmdlet | None:
        # Module-qualified names (Microsoft.PowerShell.Management\Stop-Service) resolve the same way.
        short = name.rsplit("\\", 1)[-1]
        cmdlet = CMDLETS.get(short.lower())
        if cmdlet is None:
            return None
        if self.endpoint is not None and not any(
            fnmatch.fnmatchcase(cmdlet.name.lower(), visible.lower())
            for visible in self.endpoint.visible_cmdlets
        ):
            return None
        return cmdlet

    async def run_elements(self, elements: Statement, input: list[Any], *, in_script: bool) -> list[Any]:
        data = input
        for element in elements:
            if isinstance(element, Literal):
                data = element.value if isinstance(element.value, list) else [element.value]
            elif element.is_script:
                data = await self.run_script(element.name, data)
            else:
                data = await self.run_command(element, data)
        return data

    async def run_script(self, text: str, input: list[Any]) -> list[Any]:
        if self.endpoint is not None:
            raise PipelineFailed(errors.scripts_not_allowed(text))
        try:
            statements = parse(text)
        except ParseError as exc:
            raise PipelineFailed(errors.parse_error(exc.error_id, exc.message, text)) from exc
        output: list[Any] = []
        for statement in statements:
            try:
                output.extend(await self.run_elements(statement, input, in_script=True))
            except _CommandNotFound as exc:
                # In a script an unknown command fails its statement only; the script goes on.
                self.sink.write_error(exc.record)
        return output

    async def run_command(self, spec: CommandSpec, input: list[Any]) -> list[Any]:
        cmdlet = self.lookup(spec.name)
        if cmdlet is None:
            raise _CommandNotFound(errors.command_not_found(spec.name))
        bound = cmdlet.bind(spec.args, bool(input))
        inv = Invocation(
            self.node,
            cmdlet,
            self.sink,
            self.run_script,
            error_action=bound.pop("ErrorAction", "Continue"),
            warning_action=bound.pop("WarningAction", "Continue"),
        )
        await cmdlet.body(inv, bound, input)
        return inv.output


class _CommandNotFound(PipelineFailed):
    """CommandNotFoundException: terminating for a pipeline of commands, per statement in a script."""
