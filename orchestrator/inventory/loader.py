"""Loading an inventory: the typed file, then each node resolved through its layers.

Node settings are layered: `defaults` <- the group's `defaults` <- the node, merged key by key,
except `credentials`, which a more specific layer replaces as a whole (mixing an environment
variable from one layer with a file from another would be a credential nobody wrote).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator import yamlsource
from orchestrator.addresses import host_key
from orchestrator.inventory.model import (
    _NODE_OWN_KEYS,
    CredentialsRef,
    Group,
    Health,
    InventoryFile,
    LoadBalancer,
    NodeEntry,
    NodeHealth,
    NodeSpec,
    NodeTransport,
    Notify,
    Rollout,
    Settings,
)
from orchestrator.inventory.values import DEFAULT_PORTS
from orchestrator.lease import LeaseTimes
from orchestrator.store import PgJournal, StoreError, is_url
from orchestrator.yamlsource import Document, PathKey, SourceError

# --- the loaded inventory -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origins:
    """Where each merged node setting came from, so an error lands on the line that set it."""

    node: str
    node_path: PathKey
    # setting path -> (layer rank: defaults 0 < group 1 < node 2, path in the document)
    assigned: dict[PathKey, tuple[int, PathKey]] = field(default_factory=dict)

    def find(self, setting: PathKey) -> tuple[int, PathKey] | None:
        for cut in range(len(setting), 0, -1):
            hit = self.assigned.get(setting[:cut])
            if hit is not None:
                return hit[0], (*hit[1], *setting[cut:])
        return None

    def where(self, *settings: PathKey) -> PathKey:
        """The most specific place that set any of `settings`; under the node entry if none was set."""
        found = [hit for s in settings if (hit := self.find(s)) is not None]
        if found:
            return max(found, key=lambda hit: hit[0])[1]
        return (*self.node_path, *settings[0]) if settings else self.node_path

    def error(self, doc: Document, message: str, *settings: PathKey) -> SourceError:
        path = self.where(*settings)
        if path[: len(self.node_path)] != self.node_path:
            message += f" (node {self.node!r})"
        return doc.error(path, message)


@dataclass(frozen=True)
class Inventory:
    path: Path
    nodes: tuple[NodeSpec, ...]
    groups: Mapping[str, Group]
    rollout: Rollout
    load_balancer: LoadBalancer
    """The first (or only) balancer; `load_balancers` has every instance."""
    journal: Path | PgJournal
    warnings: tuple[str, ...]
    """Accepted but risky settings, formatted like errors (file:line:col: field: message)."""
    _document: Document = field(repr=False)
    _origins: Mapping[str, _Origins] = field(repr=False)
    notify: Notify = field(default_factory=Notify)
    journal_keep_days: float = 365
    lease: LeaseTimes = field(default_factory=lambda: LeaseTimes())
    load_balancers: tuple[LoadBalancer, ...] = ()
    """Every balancer instance in front of the nodes, in the file's order."""

    def balancer_path(self, index: int) -> PathKey:
        """Where balancer `index` is written: `load_balancer` or `load_balancers[index]`."""
        if self._document.data.get("load_balancers"):
            return ("load_balancers", index)
        return ("load_balancer",)

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def error_at(self, path: Iterable[str | int], message: str) -> SourceError:
        """An error at a place in the inventory file, e.g. ("rollout", "min_healthy")."""
        return self._document.error(path, message)

    def node_error(self, name: str, setting: PathKey, message: str) -> SourceError:
        """An error about one node's effective `setting` (e.g. ("lb_name",)), placed where it was set."""
        return self._origins[name].error(self._document, message, setting)


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory; raises SourceError for the first problem found."""
    return _from_document(yamlsource.load(path))


def parse_inventory(text: str, file: str) -> Inventory:
    """Validate inventory text as if read from `file` (relative paths resolve beside it)."""
    return _from_document(yamlsource.parse(text, file))


def _from_document(doc: Document) -> Inventory:
    if not isinstance(doc.data, dict):
        raise doc.error((), "an inventory is a YAML mapping with version, defaults, nodes and rollout")
    raw = yamlsource.validate(doc, InventoryFile)
    return _Loader(doc, raw).inventory()


class _Loader:
    def __init__(self, doc: Document, raw: InventoryFile) -> None:
        self.doc = doc
        self.raw = raw
        self.base = Path(doc.file).resolve().parent
        self.warnings: list[str] = []

    def inventory(self) -> Inventory:
        self._check_layers()
        nodes: list[NodeSpec] = []
        origins: dict[str, _Origins] = {}
        for index, entry in enumerate(self.raw.nodes):
            node, origin = self._resolve(index, entry)
            nodes.append(node)
            origins[node.name] = origin
        self._check_unique(nodes, origins)
        self._check_rollout()
        self._check_load_balancer()
        balancers = self._balancers()
        return Inventory(
            path=Path(self.doc.file),
            nodes=tuple(nodes),
            groups=dict(self.raw.groups),
            rollout=self.raw.rollout,
            load_balancer=balancers[0],
            load_balancers=tuple(balancers),
            journal=self._journal(),
            warnings=tuple(self.warnings),
            _document=self.doc,
            _origins=origins,
            notify=self.raw.notify,
            journal_keep_days=self.raw.journal_keep_days,
            lease=LeaseTimes(
                lease=self.raw.journal_lease_seconds,
                heartbeat=self.raw.journal_heartbeat_seconds,
                outage=self.raw.journal_outage_seconds,
            ),
        )

    def fail(self, path: PathKey, message: str) -> SourceError:
        return self.doc.error(path, message)

    def beside_inventory(self, relative: str) -> Path:
        return Path(os.path.normpath(self.base / relative))

    def warn(self, path: PathKey, message: str) -> None:
        self.warnings.append(str(self.doc.error(path, message)))

    # -- single layers: errors point at exactly the key that is wrong

    def _layers(self) -> Iterator[tuple[PathKey, Settings]]:
        yield ("defaults",), self.raw.defaults
        for name, group in self.raw.groups.items():
            yield ("groups", name, "defaults"), group.defaults
        for index, entry in enumerate(self.raw.nodes):
            yield ("nodes", index), entry

    def _check_layers(self) -> None:
        for base, layer in self._layers():
            for section in ("transport", "health"):
                if base[0] != "nodes" and not getattr(layer, section).tls_verify:
                    raise self.fail(
                        (*base, section, "tls_verify"),
                        "tls_verify: false is only accepted on an individual node, never for a whole group",
                    )
            if layer.credentials is not None:
                self._check_credentials((*base, "credentials"), layer.credentials)
        for index, entry in enumerate(self.raw.nodes):
            if entry.group is not None and entry.group not in self.raw.groups:
                close = difflib.get_close_matches(entry.group, list(self.raw.groups), n=1)
                hint = f"did you mean {close[0]!r}?" if close else "groups are defined under groups:"
                raise self.fail(("nodes", index, "group"), f"unknown group {entry.group!r}; {hint}")
        for name in self.raw.groups:
            if not any(entry.group == name for entry in self.raw.nodes):
                self.warn(("groups", name), f"group {name!r} has no nodes")

    def _check_credentials(self, path: PathKey, cred: CredentialsRef) -> None:
        given = cred.model_fields_set
        forms = {
            "file": {"file"} & given,
            "cert_file/key_file": {"cert_file", "key_file"} & given,
            "password_env": {"password_env"} & given,
            "password": {"password", "inline_password"} & given,
        }
        present = [name for name, keys in forms.items() if keys]
        if len(present) > 1:
            raise self.fail(
                path, f"credentials take exactly one form, but {' and '.join(present)} are both given"
            )
        if not present:
            raise self.fail(
                path,
                "no password source: give username/username_env with password_env, or file, "
                "or cert_file and key_file",
            )
        form = present[0]
        usernames = {"username", "username_env"} & given
        if form in ("file", "cert_file/key_file") and usernames:
            first = sorted(usernames)[0]
            raise self.fail((*path, first), f"{first} does not go with {form}: the {form} form stands alone")
        if form == "cert_file/key_file":
            for key in ("cert_file", "key_file"):
                if key not in given:
                    raise self.fail(
                        path, f"certificate credentials need both cert_file and key_file; {key} is missing"
                    )
        if form in ("password_env", "password") and len(usernames) != 1:
            problem = "both given" if usernames else "missing"
            raise self.fail(path, f"give exactly one of username or username_env ({problem})")
        if form == "password":
            if cred.password is None:
                raise self.fail((*path, "inline_password"), "inline_password is set but there is no password")
            if not cred.inline_password:
                raise self.fail(
                    (*path, "password"),
                    "an inline password must be acknowledged with inline_password: true; "
                    "prefer password_env or a credentials file",
                )

    # -- merged node view

    def _resolve(self, index: int, entry: NodeEntry) -> tuple[NodeSpec, _Origins]:
        origins = _Origins(entry.name, ("nodes", index))
        merged: dict[str, Any] = {}
        layers: list[tuple[PathKey, Any]] = [(("defaults",), self.doc.data.get("defaults"))]
        if entry.group is not None:
            group_raw = (self.doc.data.get("groups") or {}).get(entry.group) or {}
            layers.append((("groups", entry.group, "defaults"), group_raw.get("defaults")))
        node_raw = {k: v for k, v in self.doc.data["nodes"][index].items() if k not in _NODE_OWN_KEYS}
        layers.append((("nodes", index), node_raw))
        for rank, (base, data) in enumerate(layers):
            _merge(merged, data or {}, (), base, rank, origins)
        settings = Settings.model_validate(merged)
        return _NodeResolver(self, entry, settings, origins).spec(), origins

    def _check_unique(self, nodes: list[NodeSpec], origins: Mapping[str, _Origins]) -> None:
        # Names first: the origins of a duplicated name would be ambiguous.
        first_of: dict[str, int] = {}
        for index, node in enumerate(nodes):
            first = first_of.setdefault(node.name, index)
            if first != index:
                raise self.fail(
                    ("nodes", index, "name"), f"duplicate node name {node.name!r}, first at nodes[{first}]"
                )
        addresses: dict[tuple[str, int], NodeSpec] = {}
        lb_names: dict[str, NodeSpec] = {}
        for index, node in enumerate(nodes):
            key = host_key(node.host)
            if (other := addresses.setdefault((key, node.transport.port), node)) is not node:
                spelled = f" ({node.host} is {key})" if key != node.host else ""
                raise self.fail(
                    ("nodes", index, "host"),
                    f"{node.host} port {node.transport.port} is also node {other.name!r} "
                    f"({other.host}){spelled}: one machine would be restarted twice",
                )
            if (other := lb_names.setdefault(node.lb_name, node)) is not node:
                raise origins[node.name].error(
                    self.doc,
                    f"load balancer name {node.lb_name!r} is already used by node {other.name!r}",
                    ("lb_name",),
                )

    # -- rollout and load balancer

    def _check_rollout(self) -> None:
        rollout = self.raw.rollout
        given = rollout.model_fields_set
        here = ("rollout",)
        if rollout.strategy == "window":
            if misplaced := sorted({"batch", "pause_seconds"} & given):
                raise self.fail(
                    (*here, misplaced[0]), f"{misplaced[0]} applies to strategy: batch, not window"
                )
            if rollout.failure_budget.per_batch is not None:
                raise self.fail(
                    (*here, "failure_budget", "per_batch"), "per_batch applies to strategy: batch, not window"
                )
        elif "window" in given:
            raise self.fail((*here, "window"), "window applies to strategy: window; this rollout uses batch")
        if "seed" in given and rollout.order != "shuffle":
            self.warn((*here, "seed"), f"seed has no effect with order: {rollout.order}")

    def _journal(self) -> Path | PgJournal:
        raw = self.raw
        if raw.journal_heartbeat_seconds * 2 > raw.journal_lease_seconds:
            raise self.fail(
                ("journal_heartbeat_seconds",),
                f"a heartbeat every {raw.journal_heartbeat_seconds:g} s does not keep a "
                f"{raw.journal_lease_seconds:g} s lease (journal_lease_seconds): beat at least twice a lease",
            )
        if not is_url(raw.journal) and "://" not in raw.journal:
            if raw.journal_password_env is not None:
                raise self.fail(("journal_password_env",), "applies to a postgresql:// journal, not a file")
            return self.beside_inventory(raw.journal)
        try:
            return PgJournal(raw.journal, raw.journal_password_env)
        except StoreError as exc:
            raise self.fail(("journal",), str(exc)) from None

    def _balancers(self) -> list[LoadBalancer]:
        return [self._beside(lb) for lb in (list(self.raw.load_balancers) or [self.raw.load_balancer])]

    def _beside(self, lb: LoadBalancer) -> LoadBalancer:
        """A relative CA bundle of the http driver is beside the inventory, like every other path."""
        if lb.http is None or lb.http.ca_file is None:
            return lb
        ca_file = str(self.beside_inventory(lb.http.ca_file))
        return lb.model_copy(update={"http": lb.http.model_copy(update={"ca_file": ca_file})})

    def _check_load_balancer(self) -> None:
        if self.raw.load_balancers and "load_balancer" in self.raw.model_fields_set:
            raise self.fail(
                ("load_balancers",), "give load_balancer (one instance) or load_balancers (several), not both"
            )
        if self.raw.load_balancers:
            for index, lb in enumerate(self.raw.load_balancers):
                self._check_one_balancer(lb, ("load_balancers", index))
        else:
            self._check_one_balancer(self.raw.load_balancer, ("load_balancer",))

    def _check_one_balancer(self, lb: LoadBalancer, here: PathKey) -> None:
        for driver in ("haproxy", "http", "command"):
            configured = getattr(lb, driver) is not None
            if lb.driver == driver and not configured:
                raise self.fail((*here, "driver"), f"driver {driver} needs a `{driver}:` section beside it")
            if lb.driver != driver and configured:
                raise self.fail((*here, driver), f"settings for driver {driver}, but driver is {lb.driver}")


class _NodeResolver:
    """Checks that need the merged view of one node, and builds its NodeSpec."""

    def __init__(self, loader: _Loader, entry: NodeEntry, settings: Settings, origins: _Origins) -> None:
        self.loader = loader
        self.entry = entry
        self.settings = settings
        self.origins = origins

    def fail(self, message: str, *settings: PathKey) -> SourceError:
        return self.origins.error(self.loader.doc, message, *settings)

    def spec(self) -> NodeSpec:
        s = self.settings
        credentials = self._credentials()
        self._check_transport(credentials)
        self._check_action()
        transport = NodeTransport.model_validate(
            s.transport.model_dump()
            | {
                "port": s.transport.port or DEFAULT_PORTS[s.transport.scheme],
                "ca_file": self._path(s.transport.ca_file),
            }
        )
        return NodeSpec(
            name=self.entry.name,
            host=self.entry.host,
            group=self.entry.group,
            transport=transport,
            credentials=credentials.model_copy(
                update={
                    "file": self._path(credentials.file),
                    "cert_file": self._path(credentials.cert_file),
                    "key_file": self._path(credentials.key_file),
                }
            ),
            action=s.action,
            health=self._health(),
            timeouts=s.timeouts,
            lb_name=self._substitute(s.lb_name, url=False),
        )

    def _path(self, value: str | None) -> str | None:
        return None if value is None else str(self.loader.beside_inventory(value))

    def _credentials(self) -> CredentialsRef:
        if self.settings.credentials is None:
            raise self.fail(
                "no credentials for this node: set credentials in defaults, in its group's defaults or on it",
                ("credentials",),
            )
        return self.settings.credentials

    def _check_transport(self, credentials: CredentialsRef) -> None:
        t = self.settings.transport
        auth, scheme = ("transport", "auth"), ("transport", "scheme")
        if t.auth == "basic" and t.scheme != "https":
            raise self.fail(
                "auth basic sends credentials in the clear over http; use scheme: https", auth, scheme
            )
        if t.auth == "certificate" and t.scheme != "https":
            raise self.fail("auth certificate is a TLS client certificate; use scheme: https", auth, scheme)
        if t.auth == "certificate" and credentials.form != "certificate":
            raise self.fail(
                "auth certificate needs cert_file and key_file credentials", ("credentials",), auth
            )
        if credentials.form == "certificate" and t.auth != "certificate":
            raise self.fail(f"cert_file/key_file credentials need auth: certificate, not {t.auth}", auth)
        if t.scheme == "http" and t.ca_file is not None:
            raise self.fail("ca_file applies to scheme: https only", ("transport", "ca_file"), scheme)
        if t.scheme == "http" and not t.tls_verify:
            raise self.fail("tls_verify applies to scheme: https only", ("transport", "tls_verify"), scheme)
        if not t.tls_verify:
            self.loader.warn(
                self.origins.where(("transport", "tls_verify")),
                f"TLS certificate verification is off for node {self.entry.name!r}",
            )

    def _check_action(self) -> None:
        a = self.settings.action
        kind = ("action", "type")
        lists = {"services": "services", "app_pools": "apppool-recycle"}
        for key, owner in lists.items():
            values = getattr(a, key)
            if a.type == owner and not values:
                raise self.fail(f"action type {owner} needs a non-empty {key} list", ("action", key), kind)
            if a.type != owner and values:
                raise self.fail(f"{key} only applies to action type {owner}, not {a.type}", ("action", key))
        if a.type == "http-restart" and not a.detached:
            raise self.fail(
                "http-restart stops HTTP.sys and with it WinRM; it needs detached: true",
                ("action", "detached"),
                kind,
            )

    def _health(self) -> NodeHealth:
        h = self.settings.health
        if h.url is None:
            raise self.fail(
                "no health check URL: set health.url in defaults, the group or the node", ("health",)
            )
        url = self._substitute(h.url, url=True)
        origin = re.match(r"https?://[^/]*", url)
        assert origin is not None  # the template validator requires the scheme
        warmups = [
            origin.group(0) + w if w.startswith("/") else w
            for w in (self._substitute(t, url=True) for t in h.warmup_urls)
        ]
        self._check_url_host(url, ("health", "url"))
        for index, warmup in enumerate(warmups):
            self._check_url_host(warmup, ("health", "warmup_urls", index))
        if not url.startswith("https://"):
            for key in ("ca_file", "tls_verify"):
                if getattr(h, key) != Health.model_fields[key].default:
                    raise self.fail(
                        f"health.{key} applies to https health URLs only", ("health", key), ("health", "url")
                    )
        elif not h.tls_verify:
            self.loader.warn(
                self.origins.where(("health", "tls_verify")),
                f"TLS certificate verification of the health URL is off for node {self.entry.name!r}",
            )
        return NodeHealth.model_validate(
            h.model_dump() | {"url": url, "warmup_urls": warmups, "ca_file": self._path(h.ca_file)}
        )

    def _check_url_host(self, url: str, setting: PathKey) -> None:
        """A health check proves something about this node only if it asks this node."""
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            parts.port  # noqa: B018 - reading it validates it
        except ValueError as exc:
            raise self.fail(f"not a valid URL: {exc}", setting) from None
        if not host:
            raise self.fail("the URL has no host", setting)
        if self.settings.health.allow_other_host or host_key(host) == host_key(self.entry.host):
            return
        raise self.fail(
            f"the URL's host {host} is not this node's host {self.entry.host}: a check of another machine "
            "says nothing about this node; use {host}, or set health.allow_other_host: true",
            setting,
        )

    def _substitute(self, template: str, *, url: bool) -> str:
        host = self.entry.host
        if url and ":" in host:  # an IPv6 literal needs brackets inside a URL
            host = f"[{host}]"
        return template.format(host=host, name=self.entry.name)


def _merge(
    target: dict[str, Any],
    data: Mapping[str, Any],
    prefix: PathKey,
    base: PathKey,
    rank: int,
    origins: _Origins,
) -> None:
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict) and path != ("credentials",):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge(target[key], value, path, base, rank, origins)
            continue
        target[key] = copy.deepcopy(value)
        for stale in [p for p in origins.assigned if p[: len(path)] == path]:
            del origins.assigned[stale]
        origins.assigned[path] = (rank, (*base, *path))
