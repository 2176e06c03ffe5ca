"""The HTML report of a run with a failed node, opened in headless Chromium: what the browser lays
out, measured by a script added to a copy of the page (the report itself carries no script)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from orchestrator.results import ExitCode
from tests.e2e.harness import InventorySpec

_MEASURE = """<script>
const rows = [...document.querySelectorAll('.node')].map(n => ({
  name: n.dataset.node, cls: n.className,
  track: n.querySelector('.track').getBoundingClientRect().height,
  badge: getComputedStyle(n.querySelector('.outcome')).backgroundColor,
  background: getComputedStyle(n.querySelector('.label')).backgroundColor,
}));
const labels = [...document.querySelectorAll('.phase-label')].map(l => ({
  text: l.textContent, width: l.getBoundingClientRect().width, clipped: l.scrollWidth > l.clientWidth + 1,
}));
const colours = {};
document.querySelectorAll('.bar').forEach(b => {
  const phase = [...b.classList].find(c => c.startsWith('p-'));
  colours[phase] = getComputedStyle(b).backgroundColor;
});
const failed = [...document.querySelectorAll('.bar.failed')].map(b => getComputedStyle(b).outlineStyle);
const out = document.createElement('pre');
out.id = 'measure';
out.textContent = JSON.stringify({rows, labels, colours, failed,
  overflow: document.documentElement.scrollWidth > window.innerWidth});
document.body.appendChild(out);
</script>"""


def chromium() -> str:
    found = shutil.which("chromium")
    assert found, "Chromium is missing: `make test` installs Debian's chromium package"
    return found


def render(page: Path, profile: Path) -> dict[str, Any]:
    """Chromium's DOM after layout, with the measurements the script wrote into it."""
    measured = page.with_name("measured.html")
    measured.write_text(page.read_text().replace("</body>", _MEASURE + "</body>"))
    dom = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "--dump-dom",
            measured.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout
    found = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    result: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return result


def test_html_report_renders_one_row_per_node_with_the_failed_one_marked(farm: Any, tmp_path: Path) -> None:
    f = farm(
        InventorySpec(
            nodes=3, faults={"web-02": [{"kind": "hang_stop", "service": "W3SVC"}]}, timeouts={"stop": 1.5}
        )
    )
    page = tmp_path / "report.html"
    run = f.run("--html", str(page))
    assert run.code == ExitCode.PARTIAL, run.stderr
    seen = render(page, tmp_path / "chromium-profile")

    rows = {row["name"]: row for row in seen["rows"]}
    assert list(rows) == ["web-01", "web-02", "web-03"]
    assert all(row["track"] > 0 for row in rows.values())
    assert [name for name, row in rows.items() if "failed" in row["cls"].split()] == ["web-02"]
    # Marked in a way that shows: its own badge colour and row background.
    assert rows["web-02"]["badge"] != rows["web-01"]["badge"] == rows["web-03"]["badge"]
    assert rows["web-02"]["background"] != rows["web-01"]["background"]
    assert seen["failed"] == ["solid"]  # the failed stop bar is outlined
    # Every phase its own colour.
    assert {"p-drain", "p-stop", "p-start", "p-verify", "p-undrain"} <= set(seen["colours"])
    assert len(set(seen["colours"].values())) == len(seen["colours"])
    # Every phase label laid out whole, none clipped, and the page fits the window.
    assert seen["labels"] and all(label["width"] > 0 and not label["clipped"] for label in seen["labels"])
    assert any(label["text"].startswith("\u2716 stop failed") for label in seen["labels"])
    assert not seen["overflow"]
