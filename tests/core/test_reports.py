import io
import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator.log import REDACTED, register_secret
from orchestrator.report import (
    EventStream,
    LiveProgress,
    NodeFinished,
    PhaseEvent,
    RunFinished,
    RunStarted,
    html_timeline,
    junit_xml,
    print_summary,
    prometheus_text,
    read_events,
    read_json_report,
    report_json,
    result_schema,
    write_html,
    write_json_report,
    write_junit,
)
from orchestrator.report.progress import estimate_remaining
from orchestrator.results import ErrorInfo, NodeResult, PhaseResult, RunResult

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script>&web'


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def phases(*spec: tuple[str, str, float, float | None], error: ErrorInfo | None = None) -> list[PhaseResult]:
    return [
        PhaseResult(
            phase=name,
            outcome=outcome,
            started_at=at(start),
            ended_at=None if end is None else at(end),
            error=error if outcome == "failed" else None,
        )
        for name, outcome, start, end in spec
    ]


def sample(message: str = "The service cannot accept control messages at this time") -> RunResult:
    stuck = ErrorInfo(kind="cannot_accept_control", message=message, code=1061, target="W3SVC")
    all_ok = [
        (p, "ok", i * 10.0, i * 10.0 + 8) for i, p in enumerate(["preflight", "drain", "stop", "start"])
    ]
    return RunResult(
        run_id="run-42",
        tool_version="0.1.0",
        inventory_path="/etc/farm.yaml",
        started_at=T0,
        ended_at=at(300),
        outcome="partial",
        plan={"strategy": "window", "max_unavailable": 1},
        budget={"max_failures": 2},
        nodes=[
            NodeResult(
                name="web01",
                host="10.0.0.1",
                group="site-a",
                outcome="done",
                rotation="in",
                phases=phases(*all_ok),
                started_at=T0,
                ended_at=at(38),
            ),
            NodeResult(
                name="web02",
                host="10.0.0.2",
                group="site-a",
                outcome="failed",
                rotation="out",
                left_out_reason="stop failed: W3SVC stuck in StopPending",
                phases=phases(
                    ("preflight", "ok", 40, 41),
                    ("drain", "ok", 41, 50),
                    ("stop", "failed", 50, 170),
                    error=stuck,
                ),
                started_at=at(40),
                ended_at=at(170),
            ),
            NodeResult(
                name=EVIL,
                host="10.0.0.3",
                outcome="interrupted",
                rotation="unknown",
                phases=phases(
                    ("preflight", "ok", 170, 171), ("drain", "ok", 171, 180), ("stop", "cancelled", 180, None)
                ),
                started_at=at(170),
            ),
            NodeResult(name="web04", host="10.0.0.4", outcome="not_started"),
            NodeResult(
                name="web05",
                host="10.0.0.5",
                outcome="skipped",
                left_out_reason="excluded [bold]by[/] operator",
            ),
        ],
    )


def conforms(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> list[str]:
    """The JSON Schema subset pydantic emits for this model: enough to catch drift between the two."""
    if "$ref" in schema:
        return conforms(value, root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root)
    if "anyOf" in schema:
        options = [conforms(value, option, root) for option in schema["anyOf"]]
        return [] if any(not problems for problems in options) else [f"{value!r} matches no option"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{value!r} not in {schema['enum']}"]
    kind = schema.get("type")
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "null": type(None),
        "boolean": bool,
    }
    if kind in types and not isinstance(value, types[kind]):
        return [f"{value!r} is not {kind}"]
    problems = []
    if kind == "object":
        properties = schema.get("properties", {})
        problems += [f"missing {key}" for key in schema.get("required", []) if key not in value]
        for key, item in value.items():
            if key in properties:
                problems += conforms(item, properties[key], root)
            elif schema.get("additionalProperties") is False:
                problems.append(f"unexpected {key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += conforms(item, schema["additionalProperties"], root)
    if kind == "array":
        for item in value:
            problems += conforms(item, schema.get("items", {}), root)
    return problems


def test_json_report_conforms_to_the_emitted_schema_and_round_trips(tmp_path: Path) -> None:
    result = sample()
    path = write_json_report(result, tmp_path / "out" / "report.json")
    data = json.loads(path.read_text())
    schema = result_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert conforms(data, schema, schema) == []
    assert data["totals"]["failed"] == 1 and data["exit_code"] == 4
    assert read_json_report(path) == result


def test_the_schema_check_catches_a_report_that_drifted() -> None:
    schema = result_schema()
    data = json.loads(report_json(sample()))
    data["nodes"][0]["outcome"] = "exploded"
    data["nodes"][1]["colour"] = "red"
    del data["run_id"]
    problems = conforms(data, schema, schema)
    assert len(problems) == 3
    assert "missing run_id" in problems and "unexpected colour" in problems
    assert any(problem.startswith("'exploded' not in") for problem in problems)


@pytest.mark.parametrize(
    ("name", "writer"),
    [("report.json", write_json_report), ("junit.xml", write_junit), ("timeline.html", write_html)],
)
def test_report_files_are_replaced_whole(tmp_path: Path, name: str, writer: Any) -> None:
    path = tmp_path / name
    path.write_text("the previous run's report")
    # A reader (a CI job, a browser, tail) that opened the old file while the new one is written.
    with path.open() as reader:
        writer(sample(), path)
        # Written in place, the reader would see the file truncated and rewritten under it; replaced
        # by a rename, it keeps reading the old file whole.
        assert reader.read() == "the previous run's report"
    assert "run-42" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_events_are_whole_lines_visible_to_a_reader_as_soon_as_written(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    stream = EventStream(path)
    tail = path.open()
    stream.write(RunStarted(at=T0, run_id="r", inventory_path="/f.yaml", nodes=["web01"]))
    assert json.loads(tail.readline())["event"] == "run_started"
    stream.write(PhaseEvent(at=at(1), run_id="r", node="web01", phase="drain", status="started"))
    line = tail.readline()
    assert line.endswith("\n")
    assert json.loads(line) == {
        "at": "2025-03-01T02:00:01Z",
        "run_id": "r",
        "event": "phase",
        "node": "web01",
        "phase": "drain",
        "status": "started",
        "detail": "",
        "error": None,
    }
    stream.write(NodeFinished(at=at(2), run_id="r", node="web01", outcome="done", rotation="in"))
    stream.write(RunFinished(at=at(3), run_id="r", outcome="succeeded", exit_code=0, totals=sample().totals))
    stream.close()
    tail.close()
    events = list(read_events(path))
    assert [e.event for e in events] == ["run_started", "phase", "node_finished", "run_finished"]
    assert isinstance(events[3], RunFinished) and events[3].totals.nodes == 5


def test_a_torn_last_event_line_is_ignored_and_a_new_writer_appends(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventStream(path) as stream:
        stream.write(PhaseEvent(at=T0, run_id="r", node="a", phase="stop", status="ok"))
    with path.open("a") as torn:
        torn.write('{"at": "2025-03-01T02:0')
    assert [e.event for e in read_events(path)] == ["phase"]
    path.write_text(path.read_text().rsplit("\n", 1)[0] + "\n")
    with EventStream(path) as stream:
        stream.write(PhaseEvent(at=T0, run_id="r2", node="a", phase="stop", status="ok"))
    assert [e.run_id for e in read_events(path)] == ["r", "r2"]


def test_junit_has_a_test_case_per_node_with_failures_and_skips() -> None:
    suites = ET.fromstring(junit_xml(sample()))
    (suite,) = suites.iter("testsuite")
    assert {k: suite.get(k) for k in ("tests", "failures", "skipped", "errors")} == {
        "tests": "5",
        "failures": "2",
        "skipped": "2",
        "errors": "0",
    }
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == ["web01", "web02", EVIL, "web04", "web05"]
    assert cases["web01"].find("failure") is None and cases["web01"].get("time") == "38.000"
    failure = cases["web02"].find("failure")
    assert failure is not None
    assert failure.get("type") == "cannot_accept_control"
    assert failure.get("message", "").startswith("failed in stop:")
    assert "code: 1061" in (failure.text or "") and "target: W3SVC" in (failure.text or "")
    interrupted = cases[EVIL].find("failure")
    assert interrupted is not None and "interrupted in stop" in interrupted.get("message", "")
    assert cases["web04"].find("skipped") is not None
    skipped = cases["web05"].find("skipped")
    assert skipped is not None and skipped.get("message") == "excluded [bold]by[/] operator"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["outcome"] == "partial" and properties["exit_code"] == "4"


def test_junit_stays_parseable_with_control_characters_from_remote_output() -> None:
    xml = junit_xml(sample(message="\x1b[31mstop failed\x07\x00"))
    failure = ET.fromstring(xml).find(".//testcase[@name='web02']/failure")
    assert failure is not None and "stop failed" in failure.get("message", "")


def test_console_summary_off_a_terminal_is_plain_aligned_text() -> None:
    out = io.StringIO()
    print_summary(sample(), Console(file=out, force_terminal=False, width=80))
    lines = out.getvalue().splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "node",
        "outcome",
        "failed phase",
        "error",
        "rotation",
        "duration",
        "reason",
    ]
    rows = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line) for line in lines[1:-1]}
    assert rows["web01"] == ["web01", "done", "-", "-", "in", "38.0s"]
    assert rows["web02"][:6] == ["web02", "failed", "stop", "cannot_accept_control", "out", "2m10s"]
    assert rows["web02"][6] == "stop failed: W3SVC stuck in StopPending"
    assert rows[EVIL][:5] == [EVIL, "interrupted", "stop", "-", "unknown"]
    assert rows["web04"] == ["web04", "not_started", "-", "-", "unknown", "-"]
    assert lines[-1].startswith("run run-42: partial (exit 4) - 5 nodes: 1 done, 1 failed, 1 interrupted")
    assert "\x1b" not in out.getvalue() and "│" not in out.getvalue()


def test_console_summary_on_a_terminal_is_a_table() -> None:
    out = io.StringIO()
    print_summary(sample(), Console(file=out, force_terminal=True, width=200))
    text = out.getvalue()
    assert "│" in text and "\x1b[" in text
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for name in (
        "web01",
        "web02",
        "web04",
        "web05",
        "cannot_accept_control",
        "excluded [bold]by[/] operator",
    ):
        assert name in plain
    assert "partial (exit 4)" in plain


def progress_events() -> list[PhaseEvent | NodeFinished]:
    return [
        PhaseEvent(at=at(1), run_id="r", node="web01", phase="drain", status="started"),
        PhaseEvent(
            at=at(9),
            run_id="r",
            node="web01",
            phase="stop",
            status="failed",
            error=ErrorInfo(kind="timed_out", message="1053"),
        ),
        NodeFinished(
            at=at(10), run_id="r", node="web01", outcome="failed", rotation="out", reason="left [red]drained"
        ),
    ]


def test_live_progress_prints_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    with LiveProgress(["web01", "web02"], Console(file=out, force_terminal=False, width=80)) as progress:
        for event in progress_events():
            progress.update(event)
    assert out.getvalue().splitlines() == [
        "02:00:01Z web01 drain started",
        "02:00:09Z web01 stop failed: timed_out: 1053",
        "02:00:10Z web01 failed (rotation out): left [red]drained",
    ]


def test_plain_progress_lines_hold_no_secret_and_no_control_character() -> None:
    secret = f"Pw-{uuid.uuid4().hex}"
    register_secret(secret)
    out = io.StringIO()
    with LiveProgress(["web01"], Console(file=out, force_terminal=False, width=80)) as progress:
        progress.update(
            PhaseEvent(
                at=at(1),
                run_id="r",
                node="web01",
                phase="drain",
                status="failed",
                error=ErrorInfo(kind="lb", message=f"refused for {secret}\x07 now"),
            )
        )
    assert out.getvalue().splitlines() == [f"02:00:01Z web01 drain failed: lb: refused for {REDACTED} now"]


def test_a_preflighted_node_shows_as_waiting_for_its_turn() -> None:
    out = io.StringIO()
    with LiveProgress(["web01"], Console(file=out, force_terminal=False, width=100)) as progress:
        progress.update(PhaseEvent(at=at(1), run_id="r1", node="web01", phase="preflight", status="ok"))
    assert out.getvalue().splitlines() == ["02:00:01Z web01 preflight ok: waiting for its turn"]


def test_live_progress_on_a_terminal_keeps_finished_nodes_above_and_can_be_silenced() -> None:
    out = io.StringIO()
    with LiveProgress(["web01", "web02"], Console(file=out, force_terminal=True, width=120)) as progress:
        for event in progress_events():
            progress.update(event)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "web01 failed (rotation out): left [red]drained" in plain
    quiet = io.StringIO()
    with LiveProgress(["web01"], Console(file=quiet, force_terminal=True), enabled=False) as progress:
        for event in progress_events():
            progress.update(event)
    assert quiet.getvalue() == ""


def test_live_header_tells_run_elapsed_estimate_counts_budget_floor_and_window() -> None:
    now = [100.0]
    plan = {
        "limits": {"window": 2, "min_healthy": 3, "max_unavailable": 2, "groups": {}},
        "failure_budget": {"max_failures": 1},
        "batches": [["a", "b", "c", "d", "e"]],
        "finish_by": "2030-01-01T06:00:00+00:00",
    }
    progress = LiveProgress(
        list("abcde"), Console(file=io.StringIO(), force_terminal=False), clock=lambda: now[0]
    )
    assert progress.header().startswith("starting")
    progress.started(RunStarted(at=at(0), run_id="r-7", inventory_path="/x", nodes=list("abcde"), plan=plan))
    for node in ("a", "b"):
        progress.update(PhaseEvent(at=at(1), run_id="r-7", node=node, phase="drain", status="started"))
    assert "est. -" in progress.header()  # nothing observed yet
    now[0] = 160.0
    progress.update(NodeFinished(at=at(60), run_id="r-7", node="a", outcome="done", rotation="in"))
    progress.update(NodeFinished(at=at(60), run_id="r-7", node="b", outcome="failed", rotation="out"))
    header = progress.header()
    assert header.startswith("run r-7 | elapsed 1m00s | est. finish ")
    assert "1/5 done, 1 failed, 0 in flight" in header
    assert "budget left 0/1" in header and "floor 3 healthy" in header and "window ends 06:00Z" in header


def test_estimate_follows_observed_durations_and_the_plan_parallelism() -> None:
    assert estimate_remaining([], waiting=4, in_flight=[], parallel=2) is None
    # Two nodes of 60 s seen; one in flight for 20 s (40 s left), then 3 waiting in waves of 2.
    assert estimate_remaining([50.0, 70.0], waiting=3, in_flight=[20.0], parallel=2) == 40.0 + 2 * 60.0
    assert estimate_remaining([60.0], waiting=0, in_flight=[90.0], parallel=1) == 0.0


def test_html_timeline_is_self_contained_and_escapes_all_text() -> None:
    page = html_timeline(sample())
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;web" in page
    assert not re.search(r"\b(src|href)=|@import|url\(", page)
    assert page.count('class="track"') == 5
    assert page.count('<div class="bar ') == 4 + 3 + 3
    assert page.count(' cancelled open"') == 1
    # web02's stop ran from +50s to +170s of a 300 s run.
    assert 'class="bar p-stop failed" style="left:16.667%;width:40.000%"' in page
    assert "cannot_accept_control (1061)" in page
    # Labels readable whatever the bar's width, times for people.
    assert "\u2716 stop failed 2m00s</span>" in page
    assert "2025-03-01 02:00:00 UTC to 02:05:00 UTC (5m00s)" in page and "+00:00" not in page
    assert "failure budget: 1 of 0 tolerated used" in page  # from the plan: no accounting recorded
    accounted = sample().model_copy(update={"budget": {"limit": 2, "spent": 1, "stopped": None}})
    assert "failure budget: 1 of 2 tolerated used" in html_timeline(accounted)


def summary_text(result: RunResult) -> str:
    out = io.StringIO()
    print_summary(result, Console(file=out, width=300))
    return out.getvalue()


@pytest.mark.parametrize(
    "render",
    [
        report_json,
        junit_xml,
        html_timeline,
        summary_text,
    ],
    ids=["json", "junit", "html", "console"],
)
def test_no_report_prints_a_registered_secret(render: Callable[[RunResult], str]) -> None:
    secret = f"pw-{uuid.uuid4()}"
    register_secret(secret)
    result = sample(message=f"logon failure for admin:{secret}")
    result.nodes[1].left_out_reason = f"auth with {secret} failed"
    text = render(result)
    assert secret not in text
    assert REDACTED in text


def test_event_stream_scrubs_registered_secrets(tmp_path: Path) -> None:
    secret = f"pw-{uuid.uuid4()}"
    register_secret(secret)
    with EventStream(tmp_path / "e.jsonl") as stream:
        stream.write(
            PhaseEvent(
                at=T0,
                run_id="r",
                node="web01",
                phase="preflight",
                status="failed",
                detail=f"password {secret} rejected",
                error=ErrorInfo(kind="auth", message=secret),
            )
        )
        stream.write(RunStarted(at=T0, run_id="r", inventory_path="/f", nodes=[], plan={"lb_token": "abc"}))
    text = (tmp_path / "e.jsonl").read_text()
    assert secret not in text and '"lb_token":"[REDACTED]"' in text


def test_prometheus_text_escapes_labels_and_omits_the_end_of_an_unfinished_run() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    result = sample().model_copy(update={"inventory_path": 'C:\\farms\\"a"\nb.yaml', "ended_at": None})
    result = result.model_copy(update={"outcome": "incomplete"})
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(result))}
    assert (
        "orchestrator_run_end_timestamp" not in families
        and "orchestrator_run_duration_seconds" not in families
    )
    labels = {s.labels["inventory"] for f in families.values() for s in f.samples}
    assert labels == {'C:\\farms\\"a"\nb.yaml'}
    outcome = {s.labels["outcome"]: s.value for s in families["orchestrator_run_outcome"].samples}
    assert outcome["incomplete"] == 1 and sum(outcome.values()) == 1
