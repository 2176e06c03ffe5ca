"""What the transport and the cmdlets exchange: commands as PSRP carries them, and the output sink."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import psrpcore.types


@dataclass(frozen=True)
class CommandSpec:
    """One command of a pipeline as PSRP carries it."""

    name: str  # cmdlet name, or the script text when is_script
    is_script: bool = False
    # (parameter name, or None when positional; value as psrpcore deserialized it); a switch is (name, True)
    args: tuple[tuple[str | None, Any], ...] = ()


class PipelineSink(Protocol):
    def write_output(self, value: Any) -> None: ...
    def write_error(self, record: psrpcore.types.ErrorRecord) -> None: ...
    def write_warning(self, message: str) -> None: ...
    def write_verbose(self, message: str) -> None: ...


class PipelineFailed(Exception):
    """A terminating error: the pipeline ends in state Failed with this record as its reason."""

    def __init__(self, record: psrpcore.types.ErrorRecord) -> None:
        super().__init__(str(record))
        self.record = record
