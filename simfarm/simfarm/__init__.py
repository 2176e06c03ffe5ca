"""The simulated Windows farm.

It speaks real WinRM over real sockets so that unmodified clients cannot tell it from a Windows web
server for the operations the orchestrator uses. It is a distribution of its own: it imports nothing
from the orchestrator, and the orchestrator never imports it.
"""

__version__ = "0.1.0"
