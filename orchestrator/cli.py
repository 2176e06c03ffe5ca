"""The `orchestrator` command: validate, plan, run, status, report, schema, sim."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from orchestrator import __version__
from orchestrator.results import ExitCode

if TYPE_CHECKING:
    from orchestrator.journal import NodeState
    from orchestrator.results import RunResult
    from orchestrator.resume import ResumeState

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Safe rolling restarts of Windows/IIS farms over WinRM. Graceful, verified, resumable.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

InventoryArg = Annotated[Path, typer.Argument(help="The inventory YAML file.", show_default=False)]


def _fail(message: str, code: ExitCode) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(int(code))


def _load(path: Path):  # type: ignore[no-untyped-def]
    from orchestrator.inventory import load_inventory
    from orchestrator.yamlsource import SourceError

    try:
        inv = load_inventory(path)
    except SourceError as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)
    for warning in inv.warnings:
        err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    return inv


@app.command()
def validate(inventory: InventoryArg) -> None:
    """Check an inventory and its rollout policy without contacting any node."""
    from orchestrator.rollout import InvalidInput, load_balancer, static_plan

    inv = _load(inventory)
    try:
        plan = static_plan(inv)
        load_balancer(inv)
    except InvalidInput as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)
    out.print(
        f"{inventory}: OK ({len(inv.nodes)} nodes, {len(plan.batches)} batches, strategy {plan.strategy})"
    )


@app.command()
def plan(
    inventory: InventoryArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show the batches and limits a run would follow (no node is contacted)."""
    from orchestrator.rollout import InvalidInput, static_plan

    inv = _load(inventory)
    try:
        p = static_plan(inv)
    except InvalidInput as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)
    if as_json:
        out.print_json(json.dumps(p.to_json()))
        return
    table = Table(title=f"{inventory}: strategy {p.strategy}, order {p.order}")
    table.add_column("batch", justify="right")
    table.add_column("nodes")
    for i, batch in enumerate(p.batches, 1):
        table.add_row(str(i), ", ".join(batch))
    out.print(table)
    limits = p.limits
    out.print(
        f"max unavailable {limits.max_unavailable}, capacity floor {limits.min_healthy} healthy"
        + (f", window {limits.window}" if limits.window else "")
        + (f", groups {dict(limits.groups)}" if limits.groups else "")
    )


ReportOpt = Annotated[Path | None, typer.Option(help="Write the JSON report here.")]
EventsOpt = Annotated[Path | None, typer.Option(help="Append the JSONL event stream here.")]
JunitOpt = Annotated[Path | None, typer.Option(help="Write a JUnit XML report here.")]
HtmlOpt = Annotated[Path | None, typer.Option(help="Write an HTML timeline here.")]
LogOpt = Annotated[str, typer.Option(help="debug, info, warning or error.")]


@app.command()
def run(
    inventory: InventoryArg,
    report: ReportOpt = None,
    events: EventsOpt = None,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Roll the restart over the farm. Exit codes: see `docs/results.md`."""
    _roll(inventory, None, report, events, junit, html, log_level)


@app.command()
def resume(
    inventory: InventoryArg,
    run_id: Annotated[
        str | None, typer.Option("--run", help="The run to resume; default the latest.")
    ] = None,
    report: ReportOpt = None,
    events: EventsOpt = None,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Finish an interrupted or partly failed run: nodes it finished are skipped, the others pick up
    at the phase that did not complete (each phase looks before it acts). Same limits as `run`."""
    _roll(inventory, run_id, report, events, junit, html, log_level, resuming=True)


def _roll(
    inventory: Path,
    run_id: str | None,
    report: Path | None,
    events: Path | None,
    junit: Path | None,
    html: Path | None,
    log_level: str,
    *,
    resuming: bool = False,
) -> NoReturn:
    from orchestrator.log import configure_logging
    from orchestrator.report import print_summary, write_html, write_json_report, write_junit
    from orchestrator.report.console import LiveProgress
    from orchestrator.report.events import EventStream, RunFinished
    from orchestrator.results import compute_totals, exit_code_for
    from orchestrator.rollout import InvalidInput, Locked, Rollout, RunOptions

    configure_logging(log_level)
    inv = _load(inventory)
    state = _resume_state(inv, run_id) if resuming else None
    stream = EventStream(events) if events else None
    progress = LiveProgress([n.name for n in inv.nodes], out, enabled=sys.stdout.isatty())
    try:
        rollout = Rollout(inv, RunOptions(recorder_events=stream, progress=progress), resume=state)
        with progress:
            result = asyncio.run(rollout.run())
    except InvalidInput as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)
    except Locked as exc:
        _fail(f"another run holds the lock on {inventory}: {exc}", ExitCode.LOCKED)
    finally:
        if stream is not None and "result" not in locals():
            stream.close()
    code = exit_code_for(result.outcome)
    _say_recovery(result)
    if stream is not None:
        stream.write(
            RunFinished(
                at=result.ended_at or result.started_at,
                run_id=result.run_id,
                outcome=result.outcome,
                exit_code=code,
                totals=compute_totals(result.nodes),
            )
        )
        stream.close()
    for path, writer in ((report, write_json_report), (junit, write_junit), (html, write_html)):
        if path is not None:
            writer(result, path)
    print_summary(result, out)
    raise typer.Exit(int(code))


def _say_recovery(result: RunResult) -> None:
    recovery = result.recovery
    if recovery is None:
        return
    stale = recovery.lock_takeover
    if stale is not None:
        err.print(
            f"[yellow]warning:[/] took over the lock of run {stale.run_id} (pid {stale.pid} on {stale.host}, "
            f"since {stale.since:%Y-%m-%d %H:%M:%SZ}): its process is gone",
            soft_wrap=True,
        )
    if recovery.repaired and "resumes" not in result.plan:
        steps = ", ".join(f"{n} at {p}" for n, p in recovery.repaired.items())
        err.print(
            f"[yellow]warning:[/] run {recovery.run_id} did not finish; repaired first what it left "
            f"part-way: {steps}",
            soft_wrap=True,
        )


def _recorded(inv: Any, run_id: str | None) -> tuple[RunResult, list[NodeState], str] | None:
    """A run of this inventory from its journal (the latest by default); None when none is recorded.
    An unknown run id, or one of another inventory, is an input error."""
    from orchestrator.journal import Journal, JournalError

    if not inv.journal.exists():
        return None
    with Journal(inv.journal) as journal:
        if run_id is None:
            last = journal.latest_run(inv.path)
            if last is None:
                return None
            run_id = last.run_id
        try:
            result, states = journal.run_result(run_id), journal.node_states(run_id)
            digest = journal.inventory_digest(run_id)
        except JournalError as exc:
            _fail(str(exc), ExitCode.INVALID_INPUT)
    if Path(result.inventory_path).resolve() != inv.path.resolve():
        _fail(f"run {run_id} belongs to {result.inventory_path}, not {inv.path}", ExitCode.INVALID_INPUT)
    return result, states, digest


def _resume_state(inv: Any, run_id: str | None) -> ResumeState:
    from orchestrator.resume import resume_state
    from orchestrator.rollout import inventory_digest

    recorded = _recorded(inv, run_id)
    if recorded is None:
        _fail(f"nothing to resume: no run recorded (journal {inv.journal})", ExitCode.INVALID_INPUT)
    result, states, digest = recorded
    carried = result.recovery.repaired if result.recovery is not None else None
    state = resume_state(result.run_id, states, carried)
    if digest != inventory_digest(inv.path):
        # Often on purpose (a longer timeout, a node fixed by hand); worth saying, not refusing.
        err.print(
            f"[yellow]warning:[/] {inv.path} changed since run {state.run_id}; resuming with it as it is now"
        )
    if not state.pending:
        out.print(f"nothing to resume: every node of run {state.run_id} is done")
        raise typer.Exit(int(ExitCode.SUCCEEDED))
    steps = ", ".join(f"{n} at {state.start_at[n]}" for n in state.pending)
    out.print(f"resuming run {state.run_id}: {steps}")
    return state


@app.command()
def status(inventory: InventoryArg) -> None:
    """What the last run of this inventory did, and which nodes are out of rotation and why."""
    from orchestrator.report import print_summary

    inv = _load(inventory)
    recorded = _recorded(inv, None)
    if recorded is None:
        out.print(f"no run recorded for {inventory}")
        return
    result = recorded[0]
    print_summary(result, out)
    for line in _follow_up(inv, result):
        out.print(line, soft_wrap=True)


def _follow_up(inv: Any, result: RunResult) -> list[str]:
    """What the operator should know beyond the table: a lock taken from a dead run, the nodes
    out of rotation and why, and what is left to do (or whether the run is still going)."""
    from orchestrator.journal import Journal

    with Journal(inv.journal) as journal:
        left_out = journal.nodes_out_of_rotation(result.run_id)
        not_done = [n for n in journal.unfinished_nodes(result.run_id) if n.outcome != "skipped"]
        takeovers = [t for t in journal.lock_takeovers(inv.path) if t.run_id == result.run_id]
        holder = journal.lock_holder(inv.path)
    lines = [
        f"run {result.run_id} took over the lock of run {t.stale_run_id} (pid {t.stale_pid} on "
        f"{t.stale_host}, since {t.stale_since:%Y-%m-%d %H:%M:%SZ}): its process was gone"
        for t in takeovers
    ]
    if left_out:
        reasons = "; ".join(f"{n.name}: {n.reason or 'no reason recorded'}" for n in left_out)
        lines.append(f"out of rotation: {reasons}")
    if result.outcome == "incomplete":
        if holder is not None and holder[0].run_id == result.run_id and holder[1]:
            held = holder[0]
            since = f"{held.since:%Y-%m-%d %H:%M:%SZ}"
            lines.append(f"run {result.run_id} is in progress (pid {held.pid} on {held.host}, since {since})")
            return lines
        lines.append(
            f"run {result.run_id} did not finish: its process is gone. Nodes not done are listed above; "
            f"`orchestrator resume {inv.path}` picks them up."
        )
    elif result.outcome in ("preflight_refused", "invalid_input"):
        lines.append("nothing was changed on any node")
    elif not_done:
        names = ", ".join(f"{n.name} ({n.outcome or 'interrupted'})" for n in not_done)
        lines.append(f"not done: {names}; `orchestrator resume {inv.path}` picks them up")
    return lines


@app.command()
def report(
    inventory: InventoryArg,
    run_id: Annotated[str | None, typer.Option("--run", help="A run id; default the latest.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="json, junit or html.")] = "json",
) -> None:
    """Rebuild a run's report from the journal (works after a crash) and print it."""
    from orchestrator.report import html_timeline, junit_xml, report_json

    inv = _load(inventory)
    renderers = {"json": report_json, "junit": junit_xml, "html": html_timeline}
    if fmt not in renderers:
        _fail(f"--format must be one of {', '.join(renderers)}", ExitCode.INVALID_INPUT)
    recorded = _recorded(inv, run_id)
    if recorded is None:
        _fail(f"no run recorded for {inventory} (journal {inv.journal})", ExitCode.INVALID_INPUT)
    sys.stdout.write(renderers[fmt](recorded[0]))


@app.command()
def schema(
    result: Annotated[bool, typer.Option("--result", help="The JSON report's schema instead.")] = False,
) -> None:
    """Print the JSON Schema of the inventory (for editors), or of the JSON report."""
    if result:
        from orchestrator.report import result_schema

        sys.stdout.write(json.dumps(result_schema(), indent=2) + "\n")
    else:
        from orchestrator.inventory import json_schema

        sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def sim(ctx: typer.Context) -> None:
    """Run the simulated Windows farm (the `simfarm` command, when it is installed); `sim --help`."""
    try:
        from simfarm.farm import main as simfarm_main
    except ImportError:
        _fail(
            "the simulated farm is not installed; from the repository: pip install ./simfarm "
            "(see docs/simulated-farm.md)",
            ExitCode.INVALID_INPUT,
        )
    raise typer.Exit(simfarm_main(list(ctx.args)))


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    app()
