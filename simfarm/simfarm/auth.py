"""HTTP authentication of the WinRM listeners: Negotiate/NTLM with message encryption, and Basic.

Windows binds an NTLM logon to the TCP connection (HTTP.sys keeps the security context), so the state
lives per connection and later requests on it carry no Authorization header. Message encryption is
the `multipart/encrypted` framing of MS-WSMV 2.2.9.1 with the context's WinRM wrap/unwrap.

pyspnego's NTLM acceptor reads accounts from the file named by NTLM_USER_FILE. Each farm writes its
account into its own file and points the variable at it only while the acceptor runs, which is
synchronous on the event loop thread, so farms in one process cannot see each other's accounts.
The node still has the last word: a completed logon is kept only if `SimNode.accepts` agrees.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spnego
import spnego.channel_bindings
import spnego.exceptions

from simfarm.accounts import account_of
from simfarm.node import SimNode

_ENV = "NTLM_USER_FILE"
BOUNDARY = "Encrypted Boundary"
SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
_ENCRYPTED_TYPE = re.compile(r"^multipart/encrypted\s*;", re.IGNORECASE)
_SCHEME = re.compile(r"^\s*(\w+)\s*(.*)$")


class AccountFile:
    """The NTLM account store of one farm: its user, under every domain a client may prefix."""

    def __init__(self, path: Path, username: str, password: str, domains: Iterable[str]) -> None:
        if any(c in password for c in ":\r\n"):
            raise ValueError(
                "the simulated farm's password cannot contain ':' or line breaks (NTLM account file)"
            )
        user = account_of(username)
        lines = [f"{domain}:{user}:{password}" for domain in dict.fromkeys(["", ".", *domains])]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        path.chmod(0o600)
        self.path = path
        self.password = password

    @contextmanager
    def active(self) -> Iterator[None]:
        previous = os.environ.get(_ENV)
        os.environ[_ENV] = str(self.path)
        try:
            yield
        finally:
            if previous is None:
                del os.environ[_ENV]
            else:
                os.environ[_ENV] = previous


@dataclass(frozen=True)
class ListenerSecurity:
    tls: bool
    allow_unencrypted: bool  # the AllowUnencrypted switch: Basic and plain SOAP over HTTP
    channel_binding: bytes | None = None  # tls-server-end-point data of the listener's certificate

    @property
    def basic_allowed(self) -> bool:
        return self.tls or self.allow_unencrypted


class ConnectionAuth:
    """What one TCP connection has proven so far."""

    def __init__(self) -> None:
        self.context: Any = None  # spnego context: in progress, or complete and able to seal
        self.user: str | None = None


@dataclass(frozen=True)
class Accepted:
    user: str
    final_token: bytes | None = None  # the acceptor's last token, sent back with the 200
    handshake: bool = False  # the request only carried a token (the empty POST before encryption)


@dataclass(frozen=True)
class Rejected:
    headers: tuple[tuple[str, str], ...]


def challenge_headers(security: ListenerSecurity, token: bytes | None = None) -> tuple[tuple[str, str], ...]:
    if token is not None:
        return (("WWW-Authenticate", "Negotiate " + base64.b64encode(token).decode("ascii")),)
    headers = [("WWW-Authenticate", "Negotiate")]
    if security.basic_allowed:
        headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
    return tuple(headers)


def authenticate(
    authorization: str | None,
    body_empty: bool,
    conn: ConnectionAuth,
    node: SimNode,
    accounts: AccountFile,
    security: ListenerSecurity,
) -> Accepted | Rejected:
    """Decide one request's identity from its Authorization header and the connection's state."""
    rejected = Rejected(challenge_headers(security))
    if not authorization:
        if conn.user is not None:
            return Accepted(conn.user)
        return rejected
    m = _SCHEME.match(authorization)
    if m is None:
        return rejected
    scheme, credentials = m.group(1).lower(), m.group(2).strip()
    if scheme == "basic":
        return _basic(credentials, node, security) or rejected
    if scheme in ("negotiate", "ntlm"):
        return _negotiate(credentials, body_empty, conn, node, accounts, security) or rejected
    return rejected


def _basic(credentials: str, node: SimNode, security: ListenerSecurity) -> Accepted | None:
    if not security.basic_allowed:
        return None
    try:
        user, _, password = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return Accepted(user) if node.accepts(user, password) else None


def _negotiate(
    credentials: str,
    body_empty: bool,
    conn: ConnectionAuth,
    node: SimNode,
    accounts: AccountFile,
    security: ListenerSecurity,
) -> Accepted | Rejected | None:
    try:
        token = base64.b64decode(credentials, validate=True)
    except binascii.Error:
        return None
    if conn.context is None or conn.context.complete:
        # A token on a connection that already logged on starts a new logon, as with HTTP.sys.
        conn.user = None
        bindings = (
            spnego.channel_bindings.GssChannelBindings(application_data=security.channel_binding)
            if security.channel_binding
            else None
        )
        with accounts.active():
            conn.context = spnego.server(
                protocol="negotiate",
                channel_bindings=bindings,
                options=spnego.NegotiateOptions.wrapping_winrm,
            )
    try:
        with accounts.active():
            out = conn.context.step(token)
    except spnego.exceptions.SpnegoError:
        conn.context = None
        return None
    if not conn.context.complete:
        return Rejected(challenge_headers(security, out))
    principal = str(conn.context.client_principal or "")
    if not node.accepts(principal, accounts.password):
        conn.context = None
        return None
    conn.user = principal
    return Accepted(principal, final_token=out, handshake=body_empty)


# --- message encryption -----------------------------------------------------------------------------


def is_encrypted(content_type: str) -> bool:
    return bool(_ENCRYPTED_TYPE.match(content_type))


class SealError(Exception):
    """An encrypted body that does not decrypt: Windows answers such requests with 400."""


def unseal(context: Any, body: bytes) -> bytes:
    """The SOAP envelope inside one `multipart/encrypted` body."""
    marker = f"--{BOUNDARY}\r\n".encode()
    end = f"--{BOUNDARY}--\r\n".encode()
    if context is None or not body.startswith(marker) or not body.endswith(end):
        raise SealError("not an encrypted WinRM message")
    head, sep, rest = body[len(marker) : -len(end)].partition(marker)
    length = re.search(rb"Length=(\d+)", head)
    octet = b"\tContent-Type: application/octet-stream\r\n"
    if not sep or length is None or not rest.startswith(octet):
        raise SealError("malformed encrypted WinRM message")
    payload = rest[len(octet) :]
    header_len = int.from_bytes(payload[:4], "little")
    try:
        plain: bytes = context.unwrap_winrm(payload[4 : 4 + header_len], payload[4 + header_len :])
    except spnego.exceptions.SpnegoError as exc:
        raise SealError(str(exc)) from None
    if len(plain) != int(length.group(1)):
        raise SealError("encrypted length does not match")
    return plain


def seal(context: Any, plain: bytes) -> tuple[str, bytes]:
    """Content-Type and body of the encrypted form of a SOAP response."""
    header, data, padding = context.wrap_winrm(plain)
    original = f"type=application/soap+xml;charset=UTF-8;Length={len(plain) + padding}"
    parts = [
        f"--{BOUNDARY}\r\n".encode(),
        f"\tContent-Type: {SPNEGO_PROTOCOL}\r\n".encode(),
        f"\tOriginalContent: {original}\r\n".encode(),
        f"--{BOUNDARY}\r\n".encode(),
        b"\tContent-Type: application/octet-stream\r\n",
        len(header).to_bytes(4, "little"),
        header,
        data,
        f"--{BOUNDARY}--\r\n".encode(),
    ]
    content_type = f'multipart/encrypted;protocol="{SPNEGO_PROTOCOL}";boundary="{BOUNDARY}"'
    return content_type, b"".join(parts)
