"""The inventory's load balancer section: one instance or several, the drain policy, each mistake
placed at its line and field."""

from __future__ import annotations

import pytest

from orchestrator.inventory import parse_inventory
from orchestrator.lb import registry
from orchestrator.lb.base import DrainPolicy
from orchestrator.lb.registry import drain_policy
from orchestrator.precheck import InvalidInput, load_balancer
from orchestrator.yamlsource import SourceError
from tests.core.test_inventory import marked, text

PAIR = """\
load_balancers:
  - driver: haproxy
    haproxy: {socket: /run/haproxy/a.sock, backend: [web, api]}
    drain_timeout: 30
  - driver: haproxy
    haproxy: {socket: "[::1]:9999", backend: web}
    on_drain_timeout: proceed
    watch_seconds: 5
"""


def test_several_instances_and_the_strictest_policy() -> None:
    inv = parse_inventory(text(extra=PAIR), "/tmp/inv.yaml")
    assert [lb.haproxy.socket for lb in inv.load_balancers if lb.haproxy] == [
        "/run/haproxy/a.sock",
        "[::1]:9999",
    ]
    assert inv.load_balancer is inv.load_balancers[0]
    policy = drain_policy(inv.load_balancers)
    # The longest wait, fail when any instance says fail, the longest watch.
    assert policy == DrainPolicy(
        drain_timeout=120.0, on_drain_timeout="fail", node_drain=True, watch_seconds=5
    )
    assert load_balancer(inv).name == "haproxy /run/haproxy/a.sock+haproxy [::1]:9999"


def test_one_instance_keeps_its_single_section() -> None:
    inv = parse_inventory(text(extra="load_balancer: {driver: none, node_drain: false}\n"), "/tmp/inv.yaml")
    assert len(inv.load_balancers) == 1 and drain_policy(inv.load_balancers).node_drain is False


@pytest.mark.parametrize(
    ("source", "field", "message"),
    [
        pytest.param(
            text(extra="load_balancer: {driver: none}\n§load_balancers:\n  - {driver: none}\n"),
            "load_balancers",
            "not both",
            id="both-forms",
        ),
        pytest.param(
            text(extra="load_balancers:\n  - {driver: none}\n  - {§driver: haproxy}\n"),
            "load_balancers[1].driver",
            "needs a `haproxy:` section",
            id="instance-without-settings",
        ),
        pytest.param(
            text(extra="load_balancer: {driver: none, §on_drain_timeout: wait}\n"),
            "load_balancer.on_drain_timeout",
            "'fail' or 'proceed'",
            id="bad-policy",
        ),
    ],
)
def test_balancer_mistakes_are_placed(source: str, field: str, message: str) -> None:
    yaml_text, position = marked(source)
    with pytest.raises(SourceError) as err:
        parse_inventory(yaml_text, "/tmp/inv.yaml")
    assert (err.value.position, err.value.field_path) == (position, field)
    assert message in str(err.value)


def test_an_unavailable_driver_in_a_list_is_refused_at_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = (
        "load_balancers:\n  - {driver: none}\n  - driver: command\n"
        "    command: {drain: [lbctl, d], ready: [lbctl, r], status: [lbctl, s]}\n"
    )
    inv = parse_inventory(text(extra=extra), "/tmp/inv.yaml")
    assert load_balancer(inv).name.startswith("none+command")
    # A build without that driver refuses it by name and place, never replaces it.
    monkeypatch.delitem(registry.DRIVERS, "command")
    with pytest.raises(InvalidInput) as err:
        load_balancer(inv)
    assert "load_balancers[1].driver" in str(err.value) and "not available" in str(err.value)


def test_http_settings_need_each_operation_once() -> None:
    both = "load_balancer:\n  driver: http\n  http:\n    §drain_url: http://lb/d\n"
    yaml_text, _ = marked(text(extra=both))
    with pytest.raises(SourceError) as err:
        parse_inventory(yaml_text, "/tmp/inv.yaml")
    assert "needs ready (or the shorthand ready_url)" in str(err.value)
    typo = (
        "load_balancer:\n  driver: http\n  http:\n"
        "    drain: {url: 'http://lb/d', body: {server: '{lb_nmae}'}}\n"
        "    ready_url: http://lb/r\n    status_url: http://lb/s\n"
    )
    with pytest.raises(SourceError) as err:
        parse_inventory(text(extra=typo), "/tmp/inv.yaml")
    assert "did you mean {lb_name}" in str(err.value) and "load_balancer.http.drain.body" in str(err.value)


def test_the_http_drivers_ca_file_is_beside_the_inventory_like_every_other_path() -> None:
    http = (
        "load_balancer:\n  driver: http\n  http:\n"
        "    drain_url: https://lb/d\n    ready_url: https://lb/r\n    status_url: https://lb/s\n"
        "    ca_file: certs/lb-ca.pem\n"
    )
    inv = parse_inventory(text(extra=http), "/srv/farm/inv.yaml")
    assert inv.load_balancer.http is not None
    assert inv.load_balancer.http.ca_file == "/srv/farm/certs/lb-ca.pem"
    assert inv.load_balancers == (inv.load_balancer,)
