"""Files an inventory names (CA bundles, credentials files, client certificates): each must exist
and be readable by the account that runs the orchestrator, and those holding a secret (credentials
file, private key) by nobody else.

`validate` checks them so a missing CA bundle shows up when the inventory is written, not in the
change window; the error names the inventory line where the path was set.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from orchestrator.inventory import Inventory, NodeSpec
from orchestrator.yamlsource import PathKey, SourceError


def _named(node: NodeSpec) -> Iterator[tuple[PathKey, str]]:
    candidates: list[tuple[PathKey, str | None]] = [
        (("transport", "ca_file"), node.transport.ca_file),
        (("health", "ca_file"), node.health.ca_file),
        (("credentials", "file"), node.credentials.file),
        (("credentials", "cert_file"), node.credentials.cert_file),
        (("credentials", "key_file"), node.credentials.key_file),
    ]
    for setting, path in candidates:
        if path is not None:
            yield setting, path


# Files holding a secret: a run refuses them when group or others may read them, so validate does too.
_PRIVATE: frozenset[PathKey] = frozenset({("credentials", "file"), ("credentials", "key_file")})


def _problem(path: Path, *, private: bool) -> str | None:
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_file():
        return f"{path} is not a file"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this account"
    mode = stat.S_IMODE(path.stat().st_mode)
    # On Windows the mode bits do not reflect ACLs, so they prove nothing either way.
    if private and os.name != "nt" and mode & 0o077:
        return (
            f"{path} is accessible to group or others (mode {mode:04o}); restrict it with: chmod 600 {path}"
        )
    return None


def unreadable_files(inv: Inventory) -> list[SourceError]:
    """One error per file (and per place it is set) that is missing or unreadable, in inventory order."""
    errors: list[SourceError] = []
    seen: set[tuple[str, object, str, str]] = set()
    for node in inv.nodes:
        for setting, name in _named(node):
            problem = _problem(Path(name), private=setting in _PRIVATE)
            if problem is None:
                continue
            error = inv.node_error(node.name, setting, problem)
            key = (error.file, error.position, error.field_path, name)
            if key not in seen:  # a default shared by every node is reported once
                seen.add(key)
                errors.append(error)
    return errors


def _program_problem(program: str) -> str | None:
    """A balancer command's program: a path must be an executable file; a bare name must be on PATH."""
    if os.sep not in program:
        return None if shutil.which(program) else f"{program} is not found on PATH"
    path = Path(program)
    if not path.is_file():
        return f"{program} does not exist" if not path.exists() else f"{program} is not a file"
    return None if os.access(path, os.X_OK) else f"{program} is not executable by this account"


def unusable_balancer_files(inv: Inventory) -> list[SourceError]:
    """The balancer drivers' files: an http driver's CA bundle (read as the driver opens it) and the
    programs a command driver runs."""
    errors: list[SourceError] = []
    for index, lb in enumerate(inv.load_balancers or (inv.load_balancer,)):
        here = inv.balancer_path(index)
        if lb.http is not None and lb.http.ca_file is not None:
            problem = _problem(Path(lb.http.ca_file), private=False)
            if problem is not None:
                errors.append(inv.error_at((*here, "http", "ca_file"), problem))
        if lb.command is not None:
            for operation in ("drain", "ready", "status", "recheck"):
                argv = getattr(lb.command, operation)
                if argv:
                    problem = _program_problem(argv[0])
                    if problem is not None:
                        errors.append(inv.error_at((*here, "command", operation, 0), problem))
    return errors
