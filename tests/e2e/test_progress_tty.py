"""The live display on a real terminal: `orchestrator run` under a pseudo-terminal, the screen
rendered by a terminal emulator (pyte), with a node that fails while the display is up."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pyte

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec, _env

COLUMNS, LINES = 160, 200  # tall enough that nothing of the run scrolls off the emulated screen


def _run_on_a_terminal(
    inventory: Path, report: Path, deadline: float, stderr_to: Path | None = None
) -> tuple[int, bytes]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal (stderr maybe redirected)
        env = _env() | {"COLUMNS": str(COLUMNS), "LINES": str(LINES), "TERM": "xterm-256color"}
        try:
            if stderr_to is not None:
                os.dup2(os.open(stderr_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
            os.execve(
                sys.executable,
                [sys.executable, "-m", "orchestrator", "run", str(inventory), "--report", str(report)],
                env,
            )
        finally:
            os._exit(127)  # never return into the test runner from the forked child
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
    output = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output


def test_live_display_keeps_the_failure_warning_and_leaves_no_stale_frame(farm: Any, tmp_path: Path) -> None:
    f = farm(
        InventorySpec(
            nodes=3,
            faults={"web-02": [{"kind": "hang_stop", "service": "W3SVC"}]},
            timeouts={"stop": 1.5},
            rollout={"strategy": "window", "window": 1, "min_healthy": 1},
        )
    )
    report = tmp_path / "report.json"
    code, output = _run_on_a_terminal(f.inventory, report, time.monotonic() + 120)
    assert code == ExitCode.PARTIAL, output.decode(errors="replace")[-3000:]
    # The live region was really drawn in place (cursor movement), not printed as plain lines.
    assert b"\x1b[2K" in output or b"\x1b[1A" in output

    screen = pyte.Screen(COLUMNS, LINES)
    pyte.Stream(screen).feed(output.decode("utf-8", errors="replace"))
    lines = [line.rstrip() for line in screen.display]
    text = "\n".join(lines)
    # The warning the run logged when web-02's stop timed out is still on screen, whole.
    warning = [line for line in lines if "web-02" in line and "timed_out" in line and "stop" in line]
    assert warning, text
    assert any("web-02 failed (rotation out)" in line for line in lines), text
    # No fragment of the live header survives: the display was erased before the summary.
    assert not re.search(r"\bin flight\b|budget left|est\. finish", text), text
    # The summary is there, once, after everything else.
    totals = [i for i, line in enumerate(lines) if line.startswith("run ") and "partial (exit 4)" in line]
    assert len(totals) == 1, text
    assert max(i for i, line in enumerate(lines) if line) == totals[0]


def test_logs_sent_away_from_the_terminal_stay_there(farm: Any, tmp_path: Path) -> None:
    f = farm(
        InventorySpec(
            nodes=3,
            faults={"web-01": [{"kind": "hang_stop", "service": "W3SVC"}]},
            timeouts={"stop": 1.5},
            rollout={"strategy": "window", "window": 1, "min_healthy": 1},
        )
    )
    log = tmp_path / "run.log"
    code, output = _run_on_a_terminal(f.inventory, tmp_path / "r.json", time.monotonic() + 120, stderr_to=log)
    assert code == ExitCode.PARTIAL, output.decode(errors="replace")[-3000:]
    screen = pyte.Screen(COLUMNS, LINES)
    pyte.Stream(screen).feed(output.decode("utf-8", errors="replace"))
    text = "\n".join(line.rstrip() for line in screen.display)
    # The log is JSON lines in the file (stderr is not a terminal), not on the screen...
    assert '"error_kind": "timed_out"' in log.read_text()
    assert "error_kind" not in text
    # ...while the screen still tells which node failed, and the summary.
    assert "web-01 failed (rotation out)" in text and "partial (exit 4)" in text
