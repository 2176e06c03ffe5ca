"""A real HAProxy in front of the simulated sites, when the inventory's balancer is HAProxy.

One HAProxy process per balancer instance the inventory names (`load_balancer`, or each entry of
`load_balancers` whose driver is haproxy), configured in the farm's workdir: a frontend on the
address the farm's `sim.haproxy.frontend` names (the next port for each further instance), the
runtime API on the socket the inventory names (level admin), every backend holding every node as a
server named after the node, health checks on /healthz, and a server-state-file so that a reload
keeps runtime drains. Started in the foreground (`-db`) and stopped by its PID with the farm.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simfarm import source
from simfarm.config import SimConfig


class HAProxyFailed(RuntimeError):
    """HAProxy is missing, exited, or did not see the servers UP in time."""


@dataclass(frozen=True)
class Instance:
    socket: str  # a unix socket path or host:port, as the inventory names it
    backends: tuple[str, ...]
    frontend: str  # ADDR:PORT


def instances(doc: source.Document, config: SimConfig, first_address: str) -> list[Instance]:
    """The HAProxy instances the inventory puts in front of the nodes (none for other drivers)."""
    data = doc.data if isinstance(doc.data, dict) else {}
    entries = data.get("load_balancers") or [data.get("load_balancer") or {}]
    found: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(entries):
        if (
            isinstance(entry, dict)
            and entry.get("driver") == "haproxy"
            and isinstance(entry.get("haproxy"), dict)
        ):
            found.append((index, entry["haproxy"]))
    front = config.haproxy.frontend or f"{first_address}:{config.site_port + 1}"
    host, _, port = front.rpartition(":")
    out = []
    for k, (index, h) in enumerate(found):
        where = (
            ("load_balancers", index, "haproxy")
            if data.get("load_balancers")
            else ("load_balancer", "haproxy")
        )
        sock, backend = h.get("socket"), h.get("backend")
        if not isinstance(sock, str) or not sock:
            raise doc.error((*where, "socket"), "the simulated farm needs the runtime API socket here")
        backends = [backend] if isinstance(backend, str) else backend
        if not isinstance(backends, list) or not backends or not all(isinstance(b, str) for b in backends):
            raise doc.error((*where, "backend"), "expected a backend name or a list of them")
        out.append(Instance(sock, tuple(backends), f"{host}:{int(port) + k}"))
    return out


def _bind(address: str) -> str:
    """An address as HAProxy's `bind`/`stats socket` wants it."""
    if address.startswith("/"):
        return address
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return f"ipv6@[{host}]:{port}" if ":" in host else f"ipv4@{host}:{port}"


def render(inst: Instance, nodes: list[tuple[str, str]], config: SimConfig, workdir: Path) -> str:
    c = config.haproxy
    servers = "\n".join(f"    server {name} {address}:{config.site_port}" for name, address in nodes)
    socket_line = f"    stats socket {_bind(inst.socket)} level admin"
    if inst.socket.startswith("/"):
        socket_line += " mode 600"
    timing = (
        f"inter {c.inter_ms}ms fastinter {c.fastinter_ms}ms downinter {c.inter_ms}ms"
        f" rise {c.rise} fall {c.fall}"
    )
    backends = "\n".join(
        f"""backend {b}
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server check {timing}
{servers}
"""
        for b in inst.backends
    )
    return f"""# Written by the simulated farm; regenerated on every start.
global
{socket_line}
    stats timeout 30s
    server-state-file {workdir / "server-state"}
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue 5s
    timeout http-keep-alive 5s
    retries 2
    load-server-state-from-file global
frontend public
    bind {_bind(inst.frontend)}
    default_backend {inst.backends[0]}
{backends}"""


class HAProxyProcess:
    """One HAProxy instance, its files under `workdir`."""

    def __init__(
        self, inst: Instance, nodes: list[tuple[str, str]], config: SimConfig, workdir: Path
    ) -> None:
        self.inst = inst
        self.nodes = nodes
        self.config = config
        self.workdir = workdir
        self.config_file = workdir / "haproxy.cfg"
        self.log_file = workdir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def describe(self) -> dict[str, Any]:
        return {
            "frontend": self.inst.frontend,
            "socket": self.inst.socket,
            "backend": self.inst.backends[0],
            "backends": list(self.inst.backends),
            "pid": self.pid,
            "config": str(self.config_file.resolve()),
        }

    def start(self, ready_within: float = 30.0) -> None:
        """Start HAProxy and return once every server of every backend is UP."""
        binary = shutil.which("haproxy") or next(
            (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).exists()), None
        )
        if binary is None:
            raise HAProxyFailed("haproxy is not installed (Debian: apt-get install -y haproxy)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.inst.socket.startswith("/"):
            Path(self.inst.socket).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                Path(self.inst.socket).unlink()  # a stale socket from a farm that did not stop cleanly
        self.config_file.write_text(
            render(self.inst, self.nodes, self.config, self.workdir), encoding="utf-8"
        )
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config_file)], stdout=log, stderr=log)
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HAProxyFailed(f"haproxy exited ({self.proc.returncode}): {self._log_tail()}")
            if self._all_up():
                return
            time.sleep(0.1)
        self.stop()
        raise HAProxyFailed(
            f"haproxy did not see every server UP within {ready_within:g}s: {self._log_tail()}"
        )

    def _all_up(self) -> bool:
        try:
            text = runtime_command(self.inst.socket, "show stat")
        except OSError:
            return False
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# "):
            return False
        rows = list(csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]]))))
        up = {(r["pxname"], r["svname"]) for r in rows if r.get("status") == "UP"}
        return all((b, name) in up for b in self.inst.backends for name, _ in self.nodes)

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def runtime_command(address: str, command: str, timeout: float = 5.0) -> str:
    """One runtime API command (one connection, answer read to EOF)."""
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address
    else:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    with sock:
        sock.settimeout(timeout)
        sock.connect(target)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def start_all(
    insts: list[Instance], nodes: list[tuple[str, str]], config: SimConfig, workdir: Path
) -> list[HAProxyProcess]:
    started: list[HAProxyProcess] = []
    try:
        for k, inst in enumerate(insts):
            proc = HAProxyProcess(inst, nodes, config, workdir / f"haproxy-{k}")
            started.append(proc)
            proc.start()
    except BaseException:
        stop_all(started)
        raise
    return started


def stop_all(procs: list[HAProxyProcess]) -> None:
    for proc in procs:
        proc.stop()


def describe(procs: list[HAProxyProcess]) -> dict[str, Any]:
    if not procs:
        return {}
    out: dict[str, Any] = {"load_balancer": procs[0].describe()}
    if len(procs) > 1:
        out["load_balancers"] = [p.describe() for p in procs]
    return out
