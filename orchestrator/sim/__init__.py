"""The simulated Windows farm.

It speaks real WinRM over real sockets so that unmodified clients cannot tell it from a Windows web
server for the operations the orchestrator uses. It imports nothing from the orchestrator's core
(only the shared `orchestrator.yamlsource` loader), and the core never imports it.
"""
