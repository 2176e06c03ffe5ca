"""Resolving credentials at run time: environment, file, inline, certificate; no secret ever shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.credentials import Credentials, CredentialsError, resolve_credentials
from orchestrator.inventory import NodeSpec, parse_inventory


def node(tmp_path: Path, credentials: str, transport: str = "{}") -> NodeSpec:
    text = f"""\
version: 1
defaults:
  transport: {transport}
  credentials: {credentials}
  health: {{url: "http://{{host}}/"}}
nodes:
  - {{name: web-01, host: 10.0.0.1}}
"""
    return parse_inventory(text, str(tmp_path / "farm.yaml")).nodes[0]


def secret_file(path: Path, content: str, mode: int) -> None:
    path.write_text(content)
    path.chmod(mode)


def test_from_environment(tmp_path: Path) -> None:
    spec = node(tmp_path, "{username_env: ORCH_USER, password_env: ORCH_PASSWORD}")
    creds = resolve_credentials(spec, {"ORCH_USER": "CORP\\svc", "ORCH_PASSWORD": "pa55"})
    assert creds.username == "CORP\\svc"
    assert creds.password is not None and creds.password.get_secret_value() == "pa55"
    assert "pa55" not in repr(creds) and "pa55" not in str(creds)


def test_literal_username_with_password_from_environment(tmp_path: Path) -> None:
    spec = node(tmp_path, "{username: svc, password_env: ORCH_PASSWORD}")
    assert resolve_credentials(spec, {"ORCH_PASSWORD": "x"}).username == "svc"


@pytest.mark.parametrize(
    ("env", "problem"),
    [({"ORCH_USER": "u"}, "is not set"), ({"ORCH_USER": "u", "ORCH_PASSWORD": ""}, "is empty")],
)
def test_a_missing_variable_is_named_with_the_node(tmp_path: Path, env: dict[str, str], problem: str) -> None:
    spec = node(tmp_path, "{username_env: ORCH_USER, password_env: ORCH_PASSWORD}")
    with pytest.raises(CredentialsError) as caught:
        resolve_credentials(spec, env)
    assert (
        str(caught.value)
        == f"node 'web-01': environment variable ORCH_PASSWORD {problem} (credentials.password_env)"
    )


def test_from_a_private_file_beside_the_inventory(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    secret_file(tmp_path / "secrets" / "winrm.yaml", "username: svc\npassword: 'hunter2'\n", 0o600)
    creds = resolve_credentials(node(tmp_path, "{file: secrets/winrm.yaml}"), {})
    assert creds.username == "svc"
    assert creds.password is not None and creds.password.get_secret_value() == "hunter2"


def test_a_file_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "winrm.yaml"
    secret_file(path, "username: svc\npassword: hunter2\n", 0o644)
    with pytest.raises(CredentialsError) as caught:
        resolve_credentials(node(tmp_path, "{file: winrm.yaml}"), {})
    assert str(caught.value) == (
        f"node 'web-01': credentials.file {path} is accessible to group or others (mode 0644); "
        f"restrict it with: chmod 600 {path}"
    )


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"credentials.file .*absent.yaml: No such file"):
        resolve_credentials(node(tmp_path, "{file: absent.yaml}"), {})


def test_a_malformed_file_is_located_without_showing_values(tmp_path: Path) -> None:
    path = tmp_path / "winrm.yaml"
    secret_file(path, "username: svc\npassword: 12345\n", 0o600)
    with pytest.raises(CredentialsError) as caught:
        resolve_credentials(node(tmp_path, "{file: winrm.yaml}"), {})
    message = str(caught.value)
    assert message == (
        f"node 'web-01': credentials file {path}:2:1: password: "
        "expected a string, but YAML reads this unquoted value as a number: quote it"
    )
    assert "12345" not in message


def test_inline_acknowledged_password(tmp_path: Path) -> None:
    spec = node(tmp_path, "{username: demo, password: Demo-Passw0rd!, inline_password: true}")
    creds = resolve_credentials(spec, {})
    assert creds == Credentials("demo", creds.password)
    assert creds.password is not None and creds.password.get_secret_value() == "Demo-Passw0rd!"


def test_certificate(tmp_path: Path) -> None:
    secret_file(tmp_path / "client.pem", "cert", 0o644)
    secret_file(tmp_path / "client.key", "key", 0o600)
    spec = node(
        tmp_path, "{cert_file: client.pem, key_file: client.key}", "{scheme: https, auth: certificate}"
    )
    assert resolve_credentials(spec, {}) == Credentials(
        None, None, tmp_path / "client.pem", tmp_path / "client.key"
    )
    (tmp_path / "client.key").chmod(0o640)
    with pytest.raises(CredentialsError, match=r"credentials\.key_file .* is accessible to group or others"):
        resolve_credentials(spec, {})
