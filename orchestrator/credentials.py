"""Resolve a node's credentials when a run starts, from the source its inventory names.

Passwords stay `SecretStr` from the moment they are read: repr, str and logs show asterisks. Error
messages name the node, the variable or the file, never a value.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from orchestrator import yamlsource
from orchestrator.inventory import NodeSpec


class CredentialsError(Exception):
    """A node's credentials cannot be resolved; the message is safe to print."""


@dataclass(frozen=True)
class Credentials:
    """What the WinRM client needs. Certificate auth has no username or password."""

    username: str | None
    password: SecretStr | None
    cert_file: Path | None = None
    key_file: Path | None = None


class _CredentialsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    username: str = Field(min_length=1)
    password: SecretStr


def resolve_credentials(node: NodeSpec, environ: Mapping[str, str] | None = None) -> Credentials:
    """The node's credentials; `environ` defaults to the process environment."""
    env = os.environ if environ is None else environ
    ref = node.credentials
    if ref.form == "file":
        assert ref.file is not None
        return _from_file(node.name, Path(ref.file))
    if ref.form == "certificate":
        assert ref.cert_file is not None and ref.key_file is not None
        cert, key = Path(ref.cert_file), Path(ref.key_file)
        _require_file(node.name, cert, "cert_file")
        _require_private(node.name, key, "key_file")
        return Credentials(None, None, cert, key)
    username = ref.username
    if ref.username_env is not None:
        username = _from_env(node.name, env, ref.username_env, "username_env")
    password = ref.password
    if ref.form == "env":
        assert ref.password_env is not None
        password = SecretStr(_from_env(node.name, env, ref.password_env, "password_env"))
    return Credentials(username, password)


def _from_env(node: str, env: Mapping[str, str], variable: str, setting: str) -> str:
    value = env.get(variable)
    if value is None:
        raise CredentialsError(
            f"node {node!r}: environment variable {variable} is not set (credentials.{setting})"
        )
    if not value:
        raise CredentialsError(
            f"node {node!r}: environment variable {variable} is empty (credentials.{setting})"
        )
    return value


def _from_file(node: str, path: Path) -> Credentials:
    _require_private(node, path, "file")
    try:
        secrets = yamlsource.validate(yamlsource.load(path), _CredentialsFile)
    except yamlsource.SourceError as exc:
        # Positions and field names only: SourceError never carries the values themselves.
        raise CredentialsError(f"node {node!r}: credentials file {exc}") from None
    return Credentials(secrets.username, secrets.password)


def _require_file(node: str, path: Path, setting: str) -> os.stat_result:
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialsError(f"node {node!r}: credentials.{setting} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError(f"node {node!r}: credentials.{setting} {path} is not a regular file")
    return info


def _require_private(node: str, path: Path, setting: str) -> None:
    info = _require_file(node, path, setting)
    # On Windows the mode bits do not reflect ACLs, so they prove nothing either way.
    if os.name != "nt" and info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise CredentialsError(
            f"node {node!r}: credentials.{setting} {path} is accessible to group or others "
            f"(mode {mode:04o}); restrict it with: chmod 600 {path}"
        )
