"""The command line on inputs that need no farm: validation, plan, schema, refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.results import ExitCode

runner = CliRunner()
DEMO = Path(__file__).parents[2] / "inventories" / "demo.yaml"


def test_validate_and_plan_the_demo() -> None:
    result = runner.invoke(app, ["validate", str(DEMO)])
    assert result.exit_code == 0, result.output
    assert "OK (6 nodes" in result.output
    result = runner.invoke(app, ["plan", str(DEMO), "--json"])
    assert result.exit_code == 0
    plan = json.loads(result.output)
    assert plan["limits"]["window"] == 2 and plan["nodes"] == 6


def test_validate_accepts_a_balancer_driver_without_contacting_it(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["load_balancer"] = {
        "driver": "http",
        "http": {
            "drain_url": "https://lb.invalid/{lb_name}/drain",
            "ready_url": "https://lb.invalid/{lb_name}/ready",
            "status_url": "https://lb.invalid/{lb_name}",
        },
    }
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    result = runner.invoke(app, ["validate", str(inv)])
    assert result.exit_code == 0, result.output


def test_schema_commands_print_json_schemas() -> None:
    inv = json.loads(runner.invoke(app, ["schema"]).output)
    assert "nodes" in inv["properties"]
    result = json.loads(runner.invoke(app, ["schema", "--result"]).output)
    assert "nodes" in result["properties"]


def test_report_of_an_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["journal"] = str(tmp_path / "journal.sqlite")
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    result = runner.invoke(app, ["report", str(inv)])
    assert result.exit_code == ExitCode.INVALID_INPUT and "no run recorded" in result.output


def test_sim_passes_its_arguments_to_the_farm() -> None:
    result = runner.invoke(app, ["sim", "--nodes", "1", "--inventory", "x.yaml"])
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "not allowed with argument" in result.output


def test_validate_warns_of_a_change_window_already_over_and_run_refuses_it(tmp_path: Path) -> None:
    data = yaml.safe_load(DEMO.read_text())
    data["rollout"]["change_window"] = {"finish_by": "2020-01-01T00:00:00+00:00"}
    data["journal"] = "journal.sqlite"
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    checked = runner.invoke(app, ["validate", str(inv)])
    assert checked.exit_code == 0, checked.output
    assert "rollout.change_window.finish_by: the change window ended" in checked.output
    assert "days ago (2020-01-01T00:00:00+00:00)" in checked.output
    assert "run would refuse it" in checked.output
    refused = runner.invoke(app, ["run", str(inv)])
    assert refused.exit_code == ExitCode.INVALID_INPUT, refused.output
    assert "the change window ended" in refused.output
    assert not (tmp_path / "journal.sqlite").exists()  # refused before the journal was opened


def test_a_node_left_out_by_a_killed_run_names_its_last_journalled_phase() -> None:
    from orchestrator.cli import left_out_reason
    from orchestrator.journal import NodeState

    def state(**kw: Any) -> NodeState:
        base: dict[str, Any] = {
            "name": "web-01",
            "host": "h",
            "group": None,
            "last_phase": None,
            "last_status": None,
            "rotation": "out",
            "outcome": None,
            "reason": None,
            "services": {},
        }
        return NodeState(**{**base, **kw})

    # Killed between stop and start: no reason was written, the journal still knows where it was.
    killed = state(last_phase="stop", last_status="ok")
    assert left_out_reason(killed) == "no reason recorded; last journalled: stop ok"
    assert left_out_reason(state(reason="stop failed: W3SVC hung")) == "stop failed: W3SVC hung"
    assert left_out_reason(state()) == "no reason recorded"
