"""The farm process: every simulated node's WinRM listeners and website, until SIGINT/SIGTERM.

`serve_farm` runs a farm inside an existing event loop (tests); `run_sim` is the `simfarm` command
(also `orchestrator sim` where both are installed): it reads the nodes, serves them (optionally
spread over worker processes), prints `ready` once every listener accepts, and shuts down cleanly on
a signal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import json
import multiprocessing
import multiprocessing.connection
import resource
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simfarm import haproxy, source
from simfarm.auth import AccountFile
from simfarm.certs import FarmCA
from simfarm.config import SimConfig, sim_config
from simfarm.events import EventLog
from simfarm.node import SimNode
from simfarm.site import SiteServer
from simfarm.winrm import Ports, WinRMFront, WinRMService

NodeAddress = tuple[str, str]  # (name, address)


@dataclass
class _Member:
    node: SimNode
    winrm: WinRMService
    site: SiteServer


class Farm:
    """A running farm: its nodes, their listeners and the files clients need."""

    def __init__(self, config: SimConfig, ca_file: Path, events_path: Path, ports: Ports) -> None:
        self.config = config
        self.ca_file = ca_file
        self.events_path = events_path
        self.ports = ports
        self.members: dict[str, _Member] = {}
        self._events: EventLog | None = None
        self._front: WinRMFront | None = None

    def node(self, name: str) -> SimNode:
        return self.members[name].node

    def describe(self) -> dict[str, Any]:
        return {
            "username": self.config.username,
            "password": self.config.password,
            "ca_file": str(self.ca_file),
            "events": str(self.events_path),
            "nodes": [
                {
                    "name": m.node.name,
                    "address": m.node.address,
                    "winrm_http_port": self.ports.http,
                    "winrm_https_port": self.ports.https,
                    "site_port": self.config.site_port,
                }
                for m in self.members.values()
            ],
        }

    async def close(self) -> None:
        for m in self.members.values():
            await m.winrm.shutdown()
        if self._front is not None:
            await self._front.shutdown()
        for m in self.members.values():
            await m.site.close()
            await m.node.close()
        if self._events is not None:
            self._events.close()


async def serve_farm(
    nodes: list[NodeAddress],
    config: SimConfig,
    workdir: Path,
    events_path: Path,
    *,
    ports: Ports = Ports(),
    ca: FarmCA | None = None,
) -> Farm:
    """Boot every node and start its WinRM listeners and website; the farm is ready on return."""
    ca = ca or FarmCA.create(workdir / "pki")
    accounts = AccountFile(workdir / "ntlm-users", config.username, config.password, [n for n, _ in nodes])
    farm = Farm(config, ca.ca_file, events_path, ports)
    farm._events = EventLog(events_path)
    envelope = config.winrm.max_envelope_size_kb * 1024
    front = farm._front = WinRMFront(max_body=4 * envelope + 64 * 1024)
    try:
        for index, (name, address) in enumerate(nodes):
            node = SimNode(name, address, config, farm._events, index)
            await node.boot()
            winrm = WinRMService(node, accounts, ca.issue(name, address), ports, front)
            site = SiteServer(node)
            farm.members[name] = _Member(node, winrm, site)
            await winrm.open()
            await site.start(address, config.site_port)
    except BaseException:
        await farm.close()
        raise
    return farm


# --- the command ------------------------------------------------------------------------------------


def plan_nodes(
    inventory: Path | None, count: int | None, base_address: str | None
) -> tuple[SimConfig, list[NodeAddress]]:
    """The farm's config and its (name, address) list, from an inventory or a node count."""
    if inventory is not None:
        doc = source.load(inventory)
        config = sim_config(doc)
        nodes = _inventory_nodes(doc)
        _check_sim_nodes(doc, config, {n for n, _ in nodes})
        return config, nodes
    config = SimConfig() if base_address is None else SimConfig(base_address=base_address)
    start = ipaddress.ip_address(config.base_address)
    width = max(3, len(str(count or 0)))
    addresses: list[str] = []
    candidate = start
    while len(addresses) < (count or 0):
        if not isinstance(candidate, ipaddress.IPv4Address) or candidate.packed[-1] not in (0, 255):
            addresses.append(str(candidate))
        candidate += 1
    return config, [(f"web-{i + 1:0{width}d}", a) for i, a in enumerate(addresses)]


def _inventory_nodes(doc: source.Document) -> list[NodeAddress]:
    entries = doc.data.get("nodes") if isinstance(doc.data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise doc.error(("nodes",), "expected a list of nodes with name and host")
    out: list[NodeAddress] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise doc.error(("nodes", i, "name"), "required field is missing")
        host = str(entry.get("host") or "")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise doc.error(("nodes", i, "host"), "the simulated farm needs an IP address here") from None
        if not address.is_loopback:
            raise doc.error(("nodes", i, "host"), "the simulated farm serves loopback addresses only")
        out.append((str(entry["name"]), str(address)))
    return out


def _check_sim_nodes(doc: source.Document, config: SimConfig, names: set[str]) -> None:
    for key in config.nodes:
        if key not in names:
            raise doc.error(("sim", "nodes", key), f"no node named {key!r} in nodes")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _stop_on_signal() -> asyncio.Event:
    """Install the handlers *before* announcing readiness: whoever saw `ready` may signal at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve_alone(
    nodes: list[NodeAddress],
    config: SimConfig,
    workdir: Path,
    events: Path,
    describe: Path | None,
    balancers: list[haproxy.Instance],
) -> None:
    stop = _stop_on_signal()
    farm = await serve_farm(nodes, config, workdir, events)
    procs: list[haproxy.HAProxyProcess] = []
    try:
        # After the sites: HAProxy is ready once its health checks see every server UP.
        procs = await asyncio.to_thread(haproxy.start_all, balancers, nodes, config, workdir)
        if describe is not None:
            await asyncio.to_thread(_write_json, describe, {**farm.describe(), **haproxy.describe(procs)})
        print("ready", flush=True)
        await stop.wait()
    finally:
        await asyncio.to_thread(haproxy.stop_all, procs)
        await farm.close()


def _worker(
    conn: multiprocessing.connection.Connection,
    nodes: list[NodeAddress],
    config: SimConfig,
    workdir: Path,
    events: Path,
) -> None:
    """One worker process: serve its share of the nodes, report them, wait for a signal."""
    _raise_fd_limit()
    # The parent owns Ctrl-C; a worker stops on the SIGTERM its parent sends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> None:
        stop = _stop_on_signal()
        farm = await serve_farm(nodes, config, workdir, events, ca=FarmCA.load(workdir.parent / "pki"))
        try:
            conn.send(farm.describe())
            await stop.wait()
        finally:
            await farm.close()

    asyncio.run(main())


def _serve_workers(
    nodes: list[NodeAddress],
    config: SimConfig,
    workdir: Path,
    events: Path,
    describe: Path | None,
    workers: int,
    balancers: list[haproxy.Instance],
) -> int:
    ca = FarmCA.create(workdir / "pki")
    ctx = multiprocessing.get_context("spawn")
    procs: list[tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]] = []
    stop = False

    def on_signal(_sig: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    balancer_procs: list[haproxy.HAProxyProcess] = []
    try:
        for k in range(workers):
            share = nodes[k::workers]
            if not share:
                continue
            parent_end, child_end = ctx.Pipe(duplex=False)
            child = ctx.Process(
                target=_worker,
                args=(child_end, share, config, workdir / f"worker-{k}", events),
                name=f"sim-worker-{k}",
            )
            child.start()
            child_end.close()
            procs.append((child, parent_end))
        described: list[dict[str, Any]] = []
        for proc, conn in procs:
            try:
                described.append(conn.recv())
            except EOFError:
                print(f"sim: {proc.name} failed to start", file=sys.stderr, flush=True)
                return 1
        balancer_procs = haproxy.start_all(balancers, nodes, config, workdir)
        if describe is not None:
            merged = {
                **described[0],
                "ca_file": str(ca.ca_file),
                "nodes": [],
                **haproxy.describe(balancer_procs),
            }
            order = {name: i for i, (name, _) in enumerate(nodes)}
            merged["nodes"] = sorted(
                (n for d in described for n in d["nodes"]), key=lambda n: order[n["name"]]
            )
            _write_json(describe, merged)
        print("ready", flush=True)
        while not stop and all(p.is_alive() for p, _ in procs):
            multiprocessing.connection.wait([p.sentinel for p, _ in procs], timeout=0.2)
        return 0 if stop else 1
    finally:
        haproxy.stop_all(balancer_procs)
        for proc, _ in procs:
            if proc.is_alive():
                proc.terminate()
        for proc, _ in procs:
            proc.join()


def run_sim(
    inventory: Path | None,
    nodes: int | None,
    describe: Path | None,
    workers: int,
    base_address: str | None,
    workdir: Path | None = None,
) -> int:
    """Serve a farm until SIGINT/SIGTERM. Exit 0; 2 on a config error or an address already in use."""
    try:
        config, plan = plan_nodes(inventory, nodes, base_address)
        balancers = (
            haproxy.instances(source.load(inventory), config, plan[0][1])
            if inventory is not None and plan
            else []
        )
    except (source.SourceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if not plan:
        print(
            "error: the farm has no nodes (give --inventory FILE or --nodes N)", file=sys.stderr, flush=True
        )
        return 2
    _raise_fd_limit()
    with contextlib.ExitStack() as stack:
        base = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orchestrator-sim-")))
        base.mkdir(parents=True, exist_ok=True)
        events = base / "events.jsonl"
        if workers > 1:
            return _serve_workers(plan, config, base, events, describe, workers, balancers)
        try:
            asyncio.run(_serve_alone(plan, config, base, events, describe, balancers))
        except haproxy.HAProxyFailed as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            # The usual cause is a farm (or anything else) already serving these addresses.
            print(f"error: {exc.strerror} (is another farm running?)", file=sys.stderr, flush=True)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="simfarm",
        description="Serve a simulated Windows/IIS farm (WinRM and websites on loopback addresses) until "
        "SIGINT/SIGTERM; prints `ready` once every listener accepts.",
    )
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--inventory", type=Path, help="simulate the nodes of this inventory (and its sim:)")
    given.add_argument("--nodes", type=int, help="or simulate N nodes web-001...")
    parser.add_argument("--describe", type=Path, help="write the addresses, ports and credentials here")
    parser.add_argument("--workers", type=int, default=1, help="spread the nodes over this many processes")
    parser.add_argument("--base-address", help="first loopback address (with --nodes)")
    parser.add_argument("--workdir", type=Path, help="keep the CA and event log here (default: a temp dir)")
    args = parser.parse_args(argv)
    return run_sim(args.inventory, args.nodes, args.describe, args.workers, args.base_address, args.workdir)


if __name__ == "__main__":
    sys.exit(main())
