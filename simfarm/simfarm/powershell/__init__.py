"""The simulated node's PowerShell: what a PSRP pipeline does when it runs on a simulated server.

The transport hands over the pipeline exactly as the client sent it (cmdlets with parameters, or script
text) and a sink for the output streams; this package parses, dispatches to the domain cmdlets and
produces real object shapes and ErrorRecords.
"""

from simfarm.powershell.engine import run_pipeline
from simfarm.powershell.pipeline import CommandSpec, PipelineFailed, PipelineSink

__all__ = ["CommandSpec", "PipelineFailed", "PipelineSink", "run_pipeline"]
