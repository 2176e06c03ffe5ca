"""orchestrator: safe rolling restarts of Windows/IIS server farms over WinRM."""

__version__ = "0.1.0"
