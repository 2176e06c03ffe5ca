"""Inventory loading: the resolved node view, and one clear, located error per kind of mistake.

Invalid cases mark the expected error position with `§` in the YAML text; the marker is removed
before parsing and its line and column are what the error must name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.inventory import Inventory, Share, json_schema, load_inventory, parse_inventory
from orchestrator.yamlsource import Position, SourceError

REPO = Path(__file__).resolve().parents[2]

VERSION = "version: 1\n"
DEFAULTS = """\
defaults:
  credentials: {username_env: ORCH_USER, password_env: ORCH_PASSWORD}
  health: {url: "http://{host}:8080/healthz"}
"""
NODES = """\
nodes:
  - {name: web-01, host: 10.0.0.1}
  - {name: web-02, host: 10.0.0.2}
  - {name: web-03, host: 10.0.0.3}
  - {name: web-04, host: 10.0.0.4}
"""
GROUPS = """\
groups:
  site-a: {max_unavailable: 1}
"""


def text(*, version: str = VERSION, defaults: str = DEFAULTS, nodes: str = NODES, extra: str = "") -> str:
    return version + defaults + nodes + extra


def marked(source: str) -> tuple[str, Position]:
    before, marker, after = source.partition("§")
    assert marker, "test case has no § marker"
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return before + after, Position(line, column)


INVALID = [
    # -- the document itself
    pytest.param(
        text(version="", defaults="§" + DEFAULTS),
        "version",
        "required field is missing",
        id="missing-version",
    ),
    pytest.param(text(version="§version: 2\n"), "version", "unsupported inventory version 2", id="version-2"),
    pytest.param(text(version="§version: '1'\n"), "version", "remove the quotes", id="version-quoted"),
    pytest.param(
        text(extra="§rollot: {}\n"), "rollot", "unknown field; did you mean 'rollout'?", id="typo-top"
    ),
    pytest.param(
        text(extra="§defaults: {}\n"), "defaults", "duplicate key 'defaults'", id="yaml-duplicate-key"
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 10.0.0.1\n§"),
        "(document)",
        "invalid YAML",
        id="yaml-syntax",
    ),
    pytest.param(
        text(extra="§rollout:\n"),
        "rollout",
        "expected a mapping of settings, but the value is empty",
        id="empty-section",
    ),
    # -- nodes
    pytest.param(text(nodes="§nodes: []\n"), "nodes", "an inventory needs at least one node", id="no-nodes"),
    pytest.param(
        text(nodes="nodes:\n  - §name: web-01\n"),
        "nodes[0].host",
        "required field is missing",
        id="node-no-host",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, §host: 'http://web-01'}\n"),
        "nodes[0].host",
        "host is a DNS name or an IP address, not a URL",
        id="host-url",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, §host: 'web-01:5985'}\n"),
        "nodes[0].host",
        "host must not include a port; set transport.port instead",
        id="host-port",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {§name: yes, host: 10.0.0.1}\n"),
        "nodes[0].name",
        "YAML reads this unquoted value as a boolean: quote it",
        id="name-yes",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {§name: 1234, host: 10.0.0.1}\n"),
        "nodes[0].name",
        "YAML reads this unquoted value as a number: quote it",
        id="name-number",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 10.0.0.1}\n  - {§name: web-01, host: 10.0.0.2}\n"),
        "nodes[1].name",
        "duplicate node name 'web-01', first at nodes[0]",
        id="duplicate-name",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: WEB.example}\n  - {name: web-02, §host: web.example}\n"),
        "nodes[1].host",
        "web.example port 5985 is also node 'web-01'",
        id="duplicate-address",
    ),
    pytest.param(
        text(
            nodes="nodes:\n  - {name: web-01, host: 10.0.0.1, lb_name: s1}\n"
            "  - {name: web-02, host: 10.0.0.2, §lb_name: s1}\n"
        ),
        "nodes[1].lb_name",
        "load balancer name 's1' is already used by node 'web-01'",
        id="duplicate-lb-name",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 10.0.0.1, §group: site-x}\n", extra=GROUPS),
        "nodes[0].group",
        "unknown group 'site-x'; did you mean 'site-a'?",
        id="unknown-group",
    ),
    pytest.param(
        text(
            defaults="defaults:\n  credentials: {username_env: U, password_env: P}\n",
            nodes="nodes:\n  - §{name: web-01, host: 10.0.0.1}\n",
        ),
        "nodes[0].health",
        "no health check URL: set health.url in defaults, the group or the node",
        id="no-health-url",
    ),
    # -- transport
    pytest.param(
        text(defaults=DEFAULTS + "  transport: {§shceme: https}\n"),
        "defaults.transport.shceme",
        "unknown field; did you mean 'scheme'?",
        id="typo-transport",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  transport: {scheme: https, §tls_verify: false}\n"),
        "defaults.transport.tls_verify",
        "tls_verify: false is only accepted on an individual node, never for a whole group",
        id="tls-verify-off-in-defaults",
    ),
    pytest.param(
        text(
            nodes="nodes:\n  - {name: web-01, host: 10.0.0.1, group: site-a}\n",
            extra="groups:\n  site-a:\n    defaults: {transport: {scheme: https, §tls_verify: false}}\n",
        ),
        "groups.site-a.defaults.transport.tls_verify",
        "only accepted on an individual node",
        id="tls-verify-off-in-group",
    ),
    pytest.param(
        text(
            defaults=DEFAULTS.replace(
                'health: {url: "http://{host}:8080/healthz"}',
                'health: {url: "https://{host}/healthz", §tls_verify: false}',
            )
        ),
        "defaults.health.tls_verify",
        "only accepted on an individual node",
        id="health-tls-verify-off-in-defaults",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 10.0.0.1, health: {§ca_file: ca.pem}}\n"),
        "nodes[0].health.ca_file",
        "health.ca_file applies to https health URLs only",
        id="health-ca-file-over-http",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 10.0.0.1, transport: {§tls_verify: 'no'}}\n"),
        "nodes[0].transport.tls_verify",
        "expected true or false, unquoted",
        id="tls-verify-quoted",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 10.0.0.1, transport: {§auth: basic}}\n"),
        "nodes[0].transport.auth",
        "auth basic sends credentials in the clear over http; use scheme: https",
        id="basic-over-http",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  transport: {§auth: basic}\n"),
        "defaults.transport.auth",
        "auth basic sends credentials in the clear over http; use scheme: https (node 'web-01')",
        id="basic-over-http-in-defaults",
    ),
    pytest.param(
        text(
            nodes="nodes:\n  - name: web-01\n    host: 10.0.0.1\n"
            "    transport: {scheme: https, §auth: certificate}\n"
        ),
        "nodes[0].transport.auth",
        "auth certificate needs cert_file and key_file credentials",
        id="certificate-without-cert",
    ),
    pytest.param(
        text(
            nodes="nodes:\n  - name: web-01\n    host: 10.0.0.1\n"
            "    transport: {§auth: certificate}\n    credentials: {cert_file: c.pem, key_file: c.key}\n"
        ),
        "nodes[0].transport.auth",
        "auth certificate is a TLS client certificate; use scheme: https",
        id="certificate-over-http",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 10.0.0.1, transport: {§ca_file: ca.pem}}\n"),
        "nodes[0].transport.ca_file",
        "ca_file applies to scheme: https only",
        id="ca-file-over-http",
    ),
    # -- credentials
    pytest.param(
        text(defaults="defaults:\n  credentials: {username: demo, §password: s3cret}\n"),
        "defaults.credentials.password",
        "an inline password must be acknowledged with inline_password: true",
        id="inline-password-unacknowledged",
    ),
    pytest.param(
        text(defaults="defaults:\n  credentials: {username: demo, §inline_password: true}\n"),
        "defaults.credentials.inline_password",
        "inline_password is set but there is no password",
        id="inline-flag-without-password",
    ),
    pytest.param(
        text(defaults="defaults:\n  §credentials: {file: winrm.yaml, password_env: P}\n"),
        "defaults.credentials",
        "credentials take exactly one form, but file and password_env are both given",
        id="credentials-two-forms",
    ),
    pytest.param(
        text(defaults="defaults:\n  §credentials: {password_env: ORCH_PASSWORD}\n"),
        "defaults.credentials",
        "give exactly one of username or username_env (missing)",
        id="credentials-no-username",
    ),
    pytest.param(
        text(defaults="defaults:\n  credentials: {§username_env: ORCH-USER, password_env: P}\n"),
        "defaults.credentials.username_env",
        "'ORCH-USER' is not an environment variable name",
        id="credentials-bad-env-name",
    ),
    # -- action and health
    pytest.param(
        text(defaults=DEFAULTS + "  action: {§type: restart-all}\n"),
        "defaults.action.type",
        "Input should be 'iis-restart', 'services', 'apppool-recycle' or 'http-restart'",
        id="unknown-action-type",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  action: {§escalation: kill}\n"),
        "defaults.action.escalation",
        "Input should be 'none' or 'kill-workers'",
        id="unknown-escalation",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 10.0.0.1, action: {§type: http-restart}}\n"),
        "nodes[0].action.type",
        "http-restart stops HTTP.sys and with it WinRM; it needs detached: true",
        id="http-restart-attached",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  action: {§type: services}\n"),
        "defaults.action.type",
        "action type services needs a non-empty services list (node 'web-01')",
        id="services-without-list",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  action: {§app_pools: [Shop]}\n"),
        "defaults.action.app_pools",
        "app_pools only applies to action type apppool-recycle, not iis-restart",
        id="app-pools-for-iis-restart",
    ),
    pytest.param(
        text(
            defaults=DEFAULTS.replace('{url: "http://{host}:8080/healthz"}', '{§url: "http://{hots}:8080/"}')
        ),
        "defaults.health.url",
        "unknown placeholder {hots}; did you mean {host}?",
        id="url-placeholder-typo",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  §lb_name: 'iis-{nmae}'\n"),
        "defaults.lb_name",
        "unknown placeholder {nmae}; did you mean {name}?",
        id="lb-name-placeholder-typo",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  timeouts: {§stop: -5}\n"),
        "defaults.timeouts.stop",
        "must be greater than 0",
        id="negative-timeout",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  timeouts: {§stop: 60s}\n"),
        "defaults.timeouts.stop",
        "expected a number, but the value is text (no units: seconds are a plain number)",
        id="timeout-with-a-unit",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  timeouts: {§stop: '60'}\n"),
        "defaults.timeouts.stop",
        "expected a number, but the value is a quoted string: remove the quotes",
        id="quoted-timeout",
    ),
    # -- rollout
    pytest.param(text(extra="rollout:\n  §batch: 0\n"), "rollout.batch", "must be at least 1", id="batch-0"),
    pytest.param(
        text(extra="rollout:\n  §batch: '%'\n"),
        "rollout.batch",
        "expected a number of nodes or a whole percentage such as '25%', not '%'",
        id="percent-without-number",
    ),
    pytest.param(
        text(extra="rollout:\n  batch: [1, '10%', §abc]\n"),
        "rollout.batch[2]",
        "not 'abc'",
        id="ramp-bad-step",
    ),
    pytest.param(
        text(extra="rollout:\n  strategy: window\n  §window: 0\n"),
        "rollout.window",
        "must be at least 1",
        id="window-0",
    ),
    pytest.param(
        text(extra="rollout:\n  §window: 2\n"),
        "rollout.window",
        "window applies to strategy: window; this rollout uses batch",
        id="window-with-batch-strategy",
    ),
    pytest.param(
        text(extra="rollout:\n  strategy: window\n  §pause_seconds: 30\n"),
        "rollout.pause_seconds",
        "pause_seconds applies to strategy: batch, not window",
        id="pause-with-window-strategy",
    ),
    pytest.param(
        text(extra="rollout:\n  strategy: window\n  failure_budget: {§per_batch: 1}\n"),
        "rollout.failure_budget.per_batch",
        "per_batch applies to strategy: batch, not window",
        id="per-batch-with-window-strategy",
    ),
    pytest.param(
        text(extra="rollout:\n  §max_unavailable: '0%'\n"),
        "rollout.max_unavailable",
        "must be at least 1 (as a percentage: above 0%)",
        id="max-unavailable-0-percent",
    ),
    pytest.param(
        text(extra="rollout:\n  §min_healthy: '150%'\n"),
        "rollout.min_healthy",
        "a percentage cannot exceed 100%",
        id="min-healthy-over-100",
    ),
    pytest.param(
        text(extra="rollout:\n  failure_budget: {§max_failure_percent: 120}\n"),
        "rollout.failure_budget.max_failure_percent",
        "must be at most 100",
        id="failure-percent-over-100",
    ),
    pytest.param(
        text(extra="rollout:\n  change_window: {§finish_by: 2024-05-01T22:00:00}\n"),
        "rollout.change_window.finish_by",
        "the time needs a timezone",
        id="finish-by-naive",
    ),
    pytest.param(
        text(extra="rollout:\n  change_window: {§finish_by: 2024-05-01}\n"),
        "rollout.change_window.finish_by",
        "expected a date and time with a timezone",
        id="finish-by-date-only",
    ),
    # -- load balancer
    # -- hostile or mistaken values
    pytest.param(
        text(
            nodes="nodes:\n  - {name: web-01, host: 10.0.0.1}\n"
            "  - &n {name: web-02, host: 10.0.0.2, x: [§*n]}\n"
        ),
        "nodes[1].x[0]",
        "recursive alias",
        id="recursive-alias",
    ),
    pytest.param(
        text(extra="sim: " + "[" * 32 + "§[" + "]" * 33 + "\n"),
        "sim" + "[0]" * 32,
        "nested deeper than 32 levels",
        id="deep-nesting",
    ),
    pytest.param(
        text(extra="rollout: {seed: §" + "9" * 5000 + "}\n"),
        "rollout.seed",
        "a number this long is not a valid value",
        id="huge-integer",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  timeouts: {§stop: .inf}\n"),
        "defaults.timeouts.stop",
        "finite number",
        id="infinite-timeout",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 10.0.0.1, health: {§interval: .nan}}\n"),
        "nodes[0].health.interval",
        "finite number",
        id="nan-interval",
    ),
    pytest.param(
        text(extra="rollout: {failure_budget: {§max_failure_percent: .inf}}\n"),
        "rollout.failure_budget.max_failure_percent",
        "finite number",
        id="infinite-percent",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  action: {type: services, services: [W3SVC, §'W3*']}\n"),
        "defaults.action.services[1]",
        "'*' is a wildcard to PowerShell",
        id="service-wildcard",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  action: {type: services, services: [§'W3SVC[1]']}\n"),
        "defaults.action.services[0]",
        "'[' is a wildcard to PowerShell",
        id="service-bracket",
    ),
    pytest.param(
        text(defaults=DEFAULTS + '  action: {type: services, services: [§"W3SVC\\tX"]}\n'),
        "defaults.action.services[0]",
        "control character '\\t'",
        id="service-control-character",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  action: {type: services, services: [§'Svc/1']}\n"),
        "defaults.action.services[0]",
        "Windows service names cannot contain / or \\",
        id="service-slash",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  action: {type: services, services: [§'" + "S" * 257 + "']}\n"),
        "defaults.action.services[0]",
        "at most 256 characters",
        id="service-too-long",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  action: {type: apppool-recycle, app_pools: [§'Shop?']}\n"),
        "defaults.action.app_pools[0]",
        "'?' is a wildcard to PowerShell",
        id="apppool-wildcard",
    ),
    pytest.param(
        text(defaults=DEFAULTS + "  action: {type: apppool-recycle, app_pools: [§'Shop:Api']}\n"),
        "defaults.action.app_pools[0]",
        "IIS Manager refuses",
        id="apppool-colon",
    ),
    pytest.param(
        text(
            nodes="nodes:\n  - {name: web-01, host: 127.0.1.1}\n  - {name: web-02, §host: 127.000.001.001}\n"
        ),
        "nodes[1].host",
        "is also node 'web-01' (127.0.1.1) (127.000.001.001 is 127.0.1.1)",
        id="same-host-zero-padded",
    ),
    pytest.param(
        text(nodes="nodes:\n  - {name: web-01, host: 127.0.1.1}\n  - {name: web-02, §host: '2130706689'}\n"),
        "nodes[1].host",
        "(2130706689 is 127.0.1.1): one machine would be restarted twice",
        id="same-host-integer",
    ),
    pytest.param(
        text(
            nodes="nodes:\n  - {name: web-01, host: 127.0.1.1}\n"
            "  - {name: web-02, §host: '::ffff:127.0.1.1'}\n"
        ),
        "nodes[1].host",
        "(::ffff:127.0.1.1 is 127.0.1.1)",
        id="same-host-ipv4-mapped",
    ),
    pytest.param(
        text(defaults=DEFAULTS.replace("{url: ", "{§url: ").replace("{host}", "10.0.0.9")),
        "defaults.health.url",
        "the URL's host 10.0.0.9 is not this node's host 10.0.0.1",
        id="health-url-other-host",
    ),
    pytest.param(
        text(
            defaults=DEFAULTS.replace(
                'healthz"}', "healthz\", warmup_urls: [/warm, §'http://cdn.example/x']}"
            )
        ),
        "defaults.health.warmup_urls[1]",
        "use {host}, or set health.allow_other_host: true (node 'web-01')",
        id="warmup-url-other-host",
    ),
    pytest.param(
        text(extra="load_balancer: {§driver: haproxy}\n"),
        "load_balancer.driver",
        "driver haproxy needs a `haproxy:` section beside it",
        id="haproxy-without-settings",
    ),
    pytest.param(
        text(
            extra="load_balancer:\n  driver: none\n  §http:\n"
            "    {drain_url: 'http://lb/d', ready_url: 'http://lb/r', status_url: 'http://lb/s'}\n"
        ),
        "load_balancer.http",
        "settings for driver http, but driver is none",
        id="lb-settings-for-other-driver",
    ),
    pytest.param(
        text(extra="load_balancer:\n  driver: haproxy\n  haproxy: {§socket: admin.sock, backend: web}\n"),
        "load_balancer.haproxy.socket",
        "expected an absolute path to the admin socket or host:port",
        id="haproxy-relative-socket",
    ),
]


@pytest.mark.parametrize(("source", "field", "message"), INVALID)
def test_invalid_inventory_is_refused_at_the_right_place(source: str, field: str, message: str) -> None:
    yaml_text, position = marked(source)
    with pytest.raises(SourceError) as caught:
        parse_inventory(yaml_text, "farm.yaml")
    err = caught.value
    assert (err.file, err.position, err.field_path) == ("farm.yaml", position, field), str(err)
    assert message in err.message
    assert str(err).startswith(f"farm.yaml:{position.line}:{position.column}: {field}: ")


def test_there_are_at_least_25_invalid_cases() -> None:
    assert len(INVALID) >= 25


def billion_laughs(levels: int = 9) -> str:
    """Nine lists of nine aliases to the list before: 9**9 values once expanded."""
    out = (
        VERSION
        + DEFAULTS
        + NODES
        + 'sim:\n  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    )
    for level in range(1, levels):
        out += f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]\n"
    return out


def test_an_alias_bomb_is_refused_at_the_alias_that_expands_too_far() -> None:
    source = billion_laughs()
    with pytest.raises(SourceError) as caught:
        parse_inventory(source, "farm.yaml")
    err = caught.value
    # The bound is on the values all aliases add: l1 to l3 add 8289, l4's first alias passes 10000.
    line = next(i for i, text in enumerate(source.splitlines(), 1) if text.startswith("  l4:"))
    assert (err.position, err.field_path) == (Position(line, 12), "sim.l4[0]"), str(err)
    assert "aliases expand to more than 10000 values" in err.message


def test_aliases_within_the_bound_are_expanded() -> None:
    inv = parse_inventory(billion_laughs(levels=4), "farm.yaml")
    assert len(inv.nodes) == 4  # 9**4 values through aliases: accepted


def test_a_health_url_on_another_host_is_accepted_when_allowed() -> None:
    defaults = DEFAULTS.replace(
        '{url: "http://{host}:8080/healthz"}', '{url: "http://status.example/{name}", allow_other_host: true}'
    )
    inv = parse_inventory(text(defaults=defaults), "farm.yaml")
    assert inv.nodes[0].health.url == "http://status.example/web-01"


def test_a_health_url_naming_the_node_in_another_spelling_is_its_own() -> None:
    defaults = DEFAULTS.replace("{host}", "10.000.000.001")
    inv = parse_inventory(
        text(defaults=defaults, nodes="nodes:\n  - {name: web-01, host: 10.0.0.1}\n"), "farm.yaml"
    )
    assert inv.nodes[0].health.url == "http://10.000.000.001:8080/healthz"


# --- the resolved node view -------------------------------------------------------------------------

LAYERED = """\
version: 1
defaults:
  transport: {scheme: https, auth: ntlm, connect_timeout: 5}
  credentials: {username_env: ORCH_USER, password_env: ORCH_PASSWORD}
  action: {type: iis-restart}
  health: {url: "https://{host}:8443/healthz?node={name}", retries: 3, warmup_urls: [/warm, "http://{host}/x?n={name}"]}
  timeouts: {stop: 30}
  lb_name: "iis-{name}"
groups:
  site-a:
    max_unavailable: "50%"
    defaults:
      transport: {port: 15986}
      credentials: {file: secrets/winrm.yaml}
      timeouts: {start: 45}
nodes:
  - {name: web-01, host: web-01.example, group: site-a}
  - name: web-02
    host: "fd00::2"
    transport: {auth: negotiate, tls_verify: false}
    credentials: {username: svc, password_env: WEB02_PASSWORD}
    timeouts: {stop: 10}
    lb_name: legacy-02
journal: ../state/journal.sqlite
sim: {anything: [goes, here], not: {validated: true}}
"""


@pytest.fixture
def layered(tmp_path: Path) -> Inventory:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "farm.yaml"
    path.write_text(LAYERED)
    return load_inventory(path)


def test_group_and_node_override_defaults_key_by_key(layered: Inventory) -> None:
    web1, web2 = layered.nodes
    assert (web1.transport.scheme, web1.transport.port, web1.transport.connect_timeout) == ("https", 15986, 5)
    assert (web1.timeouts.stop, web1.timeouts.start, web1.timeouts.node) == (30, 45, 900)
    assert (web2.transport.auth, web2.transport.port, web2.transport.tls_verify) == ("negotiate", 5986, False)
    assert (web2.timeouts.stop, web2.timeouts.start) == (10, 120)
    assert web1.group == "site-a" and web2.group is None


def test_credentials_are_replaced_as_a_whole_and_paths_resolve_beside_the_inventory(
    layered: Inventory, tmp_path: Path
) -> None:
    web1, web2 = layered.nodes
    assert web1.credentials.form == "file"
    assert web1.credentials.file == str(tmp_path / "conf" / "secrets" / "winrm.yaml")
    assert web1.credentials.password_env is None  # nothing leaks in from the defaults' env form
    assert (web2.credentials.username, web2.credentials.password_env, web2.credentials.username_env) == (
        "svc",
        "WEB02_PASSWORD",
        None,
    )
    assert layered.journal == tmp_path / "state" / "journal.sqlite"


def test_templates_are_substituted_per_node(layered: Inventory) -> None:
    web1, web2 = layered.nodes
    assert web1.health.url == "https://web-01.example:8443/healthz?node=web-01"
    assert web1.health.warmup_urls == ["https://web-01.example:8443/warm", "http://web-01.example/x?n=web-01"]
    assert web2.health.url == "https://[fd00::2]:8443/healthz?node=web-02"
    assert (web1.lb_name, web2.lb_name) == ("iis-web-01", "legacy-02")
    assert web1.health.retries == 3


def test_risky_settings_are_accepted_with_a_located_warning(layered: Inventory) -> None:
    assert len(layered.warnings) == 1
    assert layered.warnings[0].endswith(
        "farm.yaml:20:34: nodes[1].transport.tls_verify: "
        "TLS certificate verification is off for node 'web-02'"
    )


def test_group_limits_and_rollout_are_kept(layered: Inventory) -> None:
    assert layered.groups["site-a"].max_unavailable == Share(50, percent=True)
    assert layered.rollout.strategy == "batch"


def test_node_error_points_where_the_setting_was_made(layered: Inventory) -> None:
    err = layered.node_error("web-01", ("lb_name",), "the load balancer has no server iis-web-01")
    assert (err.position, err.field_path) == (Position(8, 3), "defaults.lb_name")
    assert err.message.endswith("(node 'web-01')")
    err = layered.node_error("web-02", ("lb_name",), "unknown server")
    assert (err.position, err.field_path, err.message) == (
        Position(23, 5),
        "nodes[1].lb_name",
        "unknown server",
    )
    # A setting nobody wrote (a default value) is blamed on the node entry.
    err = layered.node_error("web-01", ("transport", "operation_timeout"), "too short")
    assert (err.position, err.field_path) == (Position(17, 5), "nodes[0].transport.operation_timeout")


def test_error_at_names_any_field(layered: Inventory) -> None:
    err = layered.error_at(("groups", "site-a", "max_unavailable"), "too many")
    assert str(err).endswith("conf/farm.yaml:11:5: groups.site-a.max_unavailable: too many")


def test_seed_without_shuffle_warns() -> None:
    inv = parse_inventory(text(extra="rollout: {seed: 3}\n"), "farm.yaml")
    assert inv.warnings == ("farm.yaml:10:11: rollout.seed: seed has no effect with order: inventory",)


def test_a_group_without_nodes_warns() -> None:
    inv = parse_inventory(text(extra=GROUPS), "farm.yaml")
    assert inv.warnings == ("farm.yaml:11:3: groups.site-a: group 'site-a' has no nodes",)


@pytest.mark.parametrize(
    "action",
    [
        "{type: services, services: [W3SVC, WAS]}",
        "{type: apppool-recycle, app_pools: [Shop, Api]}",
        "{type: http-restart, detached: true}",
        "{type: iis-restart, escalation: kill-workers}",
    ],
)
def test_each_action_type_is_accepted_with_what_it_needs(action: str) -> None:
    inv = parse_inventory(text(defaults=DEFAULTS + f"  action: {action}\n"), "farm.yaml")
    assert inv.nodes[0].action.type in action


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file not found"):
        load_inventory(tmp_path / "absent.yaml")


def test_inventory_must_be_a_mapping() -> None:
    with pytest.raises(SourceError, match="an inventory is a YAML mapping"):
        parse_inventory("- just\n- a list\n", "farm.yaml")


def test_passwords_never_show_in_repr() -> None:
    source = text(
        defaults=DEFAULTS.replace(
            "{username_env: ORCH_USER, password_env: ORCH_PASSWORD}",
            "{username: u, password: hunter2, inline_password: true}",
        )
    )
    inv = parse_inventory(source, "farm.yaml")
    assert "hunter2" not in repr(inv) and "hunter2" not in str(inv.nodes[0])
    assert inv.nodes[0].credentials.password is not None
    assert inv.nodes[0].credentials.password.get_secret_value() == "hunter2"


@pytest.mark.parametrize("name", ["example.yaml", "demo.yaml"])
def test_shipped_inventories_validate(name: str) -> None:
    inv = load_inventory(REPO / "inventories" / name)
    assert inv.nodes


def test_example_inventory_uses_no_inline_secret() -> None:
    inv = load_inventory(REPO / "inventories" / "example.yaml")
    assert all(node.credentials.form != "inline" for node in inv.nodes)


def test_json_schema_describes_the_file() -> None:
    schema = json_schema()
    json.dumps(schema)
    assert set(schema["required"]) == {"version", "nodes"}
    assert {"defaults", "groups", "nodes", "rollout", "load_balancer", "journal", "sim"} <= set(
        schema["properties"]
    )
    assert schema["additionalProperties"] is False
    rollout = schema["$defs"]["Rollout"]["properties"]
    assert {"type": "string", "pattern": r"^\d+%$"} in rollout["min_healthy"]["anyOf"]
    assert "capacity floor" in rollout["min_healthy"]["description"].lower()


def test_health_tls_settings_resolve_per_node_and_turning_verification_off_warns(tmp_path: Path) -> None:
    source = (
        VERSION
        + DEFAULTS.replace(
            'health: {url: "http://{host}:8080/healthz"}',
            'health: {url: "https://{host}/healthz", ca_file: pki/ca.pem}',
        )
        + (
            "nodes:\n"
            "  - {name: web-01, host: 10.0.0.1}\n"
            "  - {name: web-02, host: 10.0.0.2, health: {tls_verify: false}}\n"
        )
    )
    inv = parse_inventory(source, str(tmp_path / "farm.yaml"))
    web1, web2 = inv.nodes
    assert web1.health.ca_file == str(tmp_path / "pki" / "ca.pem")
    assert (web2.health.tls_verify, web1.health.tls_verify) == (False, True)
    assert len(inv.warnings) == 1
    assert "nodes[1].health.tls_verify" in inv.warnings[0] and "web-02" in inv.warnings[0]


def test_a_large_inventory_that_shares_an_anchor_on_every_node_is_accepted() -> None:
    # 1500 nodes x 8 values through the alias: more than 10000, but in proportion to the file.
    nodes = "nodes:\n" + "".join(
        f"  - {{name: web-{i:04d}, host: 10.1.{i // 250}.{i % 250 + 1}, timeouts: *t}}\n" for i in range(1500)
    )
    timeouts = "sim: &t {preflight: 9, drain: 9, stop: 9, start: 9, verify: 9, undrain: 9, node: 99}\n"
    inv = parse_inventory(VERSION + timeouts + DEFAULTS + nodes, "farm.yaml")
    assert len(inv.nodes) == 1500 and inv.nodes[-1].timeouts.stop == 9
