"""Files an inventory names (CA bundles, credentials files, client certificates): each must exist
and be readable by the account that runs the orchestrator, and those holding a secret (credentials
file, private key) by nobody else.

`validate` checks them so a missing CA bundle shows up when the inventory is written, not in the
change window; the error names the inventory line where the path was set.
"""

from __future__ import annotations

import os
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
