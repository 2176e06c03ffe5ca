"""Authentication of the simulated WinRM listeners, driven by unmodified pypsrp over real sockets."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest
import requests
from pypsrp.client import Client
from pypsrp.exceptions import AuthenticationError, WSManFaultError
from pypsrp.shell import WinRS
from pypsrp.wsman import WSMan

from simfarm.config import NodeSim, SimConfig, WinRMConfig, WrongCredentials
from simfarm.events import read_events

ADDRESS = "127.0.50.1"


def _hostname(farm_desc: dict[str, Any], **transport: Any) -> str:
    client = Client(ADDRESS, username=farm_desc["username"], password=farm_desc["password"], **transport)
    stdout, _stderr, rc = client.execute_cmd("hostname")
    assert rc == 0
    return stdout.strip()


@pytest.mark.parametrize(
    "transport",
    [
        {"ssl": False, "auth": "ntlm", "encryption": "always"},
        {"ssl": False, "auth": "negotiate"},
        {"ssl": True, "auth": "ntlm"},
    ],
    ids=["ntlm-http-encrypted", "negotiate-http", "ntlm-https"],
)
async def test_negotiate_family_runs_a_command(farm, in_thread, transport):
    assert await in_thread(
        _hostname, farm.describe(), cert_validation=farm.ca_file.as_posix(), **transport
    ) == ("web-001")


async def test_http_messages_are_encrypted_on_the_wire(farm, in_thread):
    """Over HTTP the SOAP body never travels in clear: the listener only takes the sealed form."""
    desc = farm.describe()

    def plain_soap_after_logon() -> int:
        wsman = WSMan(
            ADDRESS,
            ssl=False,
            auth="ntlm",
            encryption="never",
            username=desc["username"],
            password=desc["password"],
        )
        try:
            wsman.get_server_config()
        except AuthenticationError:
            return 401
        return 200

    assert await in_thread(plain_soap_after_logon) == 401


async def test_basic_over_https_verified_against_farm_ca(farm, in_thread):
    name = await in_thread(
        _hostname, farm.describe(), ssl=True, auth="basic", cert_validation=str(farm.ca_file)
    )
    assert name == "web-001"


async def test_https_certificate_names_the_node_address(farm, in_thread):
    def peer_cert() -> Any:
        ctx = ssl.create_default_context(cafile=str(farm.ca_file))
        with (
            socket.create_connection((ADDRESS, 5986), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=ADDRESS) as tls,
        ):
            return tls.getpeercert()

    cert = await in_thread(peer_cert)
    assert ("IP Address", ADDRESS) in cert["subjectAltName"]


async def test_basic_over_http_is_refused(farm, in_thread):
    desc = farm.describe()
    with pytest.raises(AuthenticationError):
        await in_thread(_hostname, desc, ssl=False, auth="basic", encryption="never")


async def test_basic_over_http_when_the_farm_allows_it(start_farm, in_thread):
    farm = await start_farm(SimConfig(winrm=WinRMConfig(allow_basic_over_http=True)))
    assert (
        await in_thread(_hostname, farm.describe(), ssl=False, auth="basic", encryption="never") == "web-001"
    )


@pytest.mark.parametrize(
    "transport",
    [
        {"ssl": False, "auth": "ntlm"},
        {"ssl": False, "auth": "negotiate"},
        {"ssl": True, "auth": "basic"},
    ],
    ids=["ntlm", "negotiate", "basic"],
)
async def test_wrong_password_is_rejected(farm, in_thread, transport):
    desc = {**farm.describe(), "password": "not-the-password"}
    with pytest.raises(AuthenticationError):
        await in_thread(_hostname, desc, cert_validation=str(farm.ca_file), **transport)


async def test_node_with_wrong_credentials_fault_rejects_the_farm_account(start_farm, in_thread):
    config = SimConfig(nodes={"web-002": NodeSim(faults=[WrongCredentials(kind="wrong_credentials")])})
    farm = await start_farm(config, count=2)
    desc = farm.describe()

    def hostname_of(address: str) -> str:
        client = Client(address, username=desc["username"], password=desc["password"], ssl=False, auth="ntlm")
        return client.execute_cmd("hostname")[0].strip()

    assert await in_thread(hostname_of, "127.0.50.1") == "web-001"
    with pytest.raises(AuthenticationError):
        await in_thread(hostname_of, "127.0.50.2")


async def test_domain_qualified_user_is_the_local_account(farm, in_thread):
    desc = {**farm.describe(), "username": "web-001\\" + farm.config.username}
    assert await in_thread(_hostname, desc, ssl=False, auth="ntlm") == "web-001"


async def test_every_spelling_of_the_account_is_one_user_for_quotas_and_the_log(start_farm, in_thread):
    farm = await start_farm(SimConfig(winrm=WinRMConfig(max_shells_per_user=2)))
    desc = farm.describe()
    user = farm.config.username
    spellings = [f"WEB-001\\{user.upper()}", f"{user}@web-001", user]

    def shells_as(names: list[str]) -> list[bool]:
        opened: list[WinRS] = []
        results = []
        for name in names:
            # pypsrp documents cert_validation as a bool or a CA bundle path, though it annotates bool.
            tls: dict[str, Any] = {"ssl": True, "auth": "basic", "cert_validation": str(farm.ca_file)}
            shell = WinRS(WSMan(ADDRESS, username=name, password=desc["password"], **tls))
            try:
                shell.open()
            except WSManFaultError:
                results.append(False)
            else:
                opened.append(shell)
                results.append(True)
        for shell in opened:
            shell.close()
        return results

    # Two shells under two spellings fill the one account's quota of two: the third spelling is refused.
    assert await in_thread(shells_as, spellings) == [True, True, False]
    users = {e["user"] for e in read_events(farm.events_path) if e["kind"] == "winrm_request"}
    assert users == {user}


async def test_requests_are_logged_without_secrets(farm, in_thread):
    await in_thread(_hostname, farm.describe(), ssl=False, auth="ntlm")
    events = [e for e in read_events(farm.events_path) if e["kind"] == "winrm_request"]
    assert [e["action"] for e in events][:2] == ["Create", "Command"]
    assert all(e["user"] == farm.config.username for e in events)
    assert farm.config.password not in farm.events_path.read_text()


async def test_unauthenticated_request_gets_the_windows_challenge(farm, in_thread):
    response = await in_thread(requests.post, f"http://{ADDRESS}:5985/wsman", data=b"", timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Negotiate"
