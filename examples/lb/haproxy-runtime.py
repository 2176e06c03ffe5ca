#!/usr/bin/env python3
"""A `command` driver hook for HAProxy's runtime API, standard library only.

    haproxy-runtime.py drain|ready|recheck|status SERVER

Settings from the environment: HAPROXY_SOCKET (a unix socket path or host:port) and HAPROXY_BACKEND
(default: web). The orchestrator also sets ORCH_LB_NAME, ORCH_NODE, ORCH_HOST and ORCH_OPERATION.

Exit codes, as the command driver reads them: 0 done; 3 no such server; 75 the balancer did not
answer (try again); 1 anything else. `status` prints
{"rotation": "in|out|unknown", "healthy": true|false|null, "sessions": N|null}.

The orchestrator's built-in `haproxy` driver does all this and more (several backends, reload
detection); this script is the template for wrapping another balancer's CLI the same way.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sys

EXIT_UNKNOWN, EXIT_TRY_AGAIN = 3, 75


def runtime(command: str) -> str:
    address = os.environ["HAPROXY_SOCKET"]
    if address.startswith("/"):
        sock, target = socket.socket(socket.AF_UNIX), address
    else:
        host, _, port = address.rpartition(":")
        sock, target = socket.socket(), (host.strip("[]"), int(port))
    with sock:
        sock.settimeout(5)
        sock.connect(target)
        sock.sendall(command.encode() + b"\n")  # without the newline HAProxy waits forever
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def main(operation: str, server: str) -> int:
    backend = os.environ.get("HAPROXY_BACKEND", "web")
    try:
        if operation == "status":
            lines = runtime("show stat -1 4 -1").splitlines()
            rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
            row = next((r for r in rows if r["pxname"] == backend and r["svname"] == server), None)
            if row is None:
                return EXIT_UNKNOWN
            rows_state = runtime(f"show servers state {backend}").splitlines()[2:]
            state = next((r.split() for r in rows_state if r.split()[3:4] == [server]), None)
            admin = int(state[6]) if state else 0  # srv_admin_state: MAINT and DRAIN bits
            op_running = state is not None and state[5] == "2"  # srv_op_state 2: running
            healthy = None if row["status"] == "no check" else (row["status"] in ("UP", "DRAIN") and op_running)
            sessions = int(row["scur"] or 0) + int(row["qcur"] or 0)
            print(json.dumps({"rotation": "out" if admin & 0x7F else "in", "healthy": healthy, "sessions": sessions}))
            return 0
        what = {"drain": "state drain", "ready": "state ready", "recheck": "health down"}[operation]
        answer = runtime(f"set server {backend}/{server} {what}").strip()
    except OSError as exc:
        print(f"runtime API: {exc}", file=sys.stderr)
        return EXIT_TRY_AGAIN
    if "No such server" in answer or "No such backend" in answer:
        return EXIT_UNKNOWN
    if answer:
        print(answer, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
