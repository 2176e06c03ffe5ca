"""The `orchestrator` command: validate, plan, run, status, report, schema, sim."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from orchestrator import __version__
from orchestrator.results import ExitCode

if TYPE_CHECKING:
    from orchestrator.journal import Journal, NodeState
    from orchestrator.plan import Plan
    from orchestrator.results import RunResult
    from orchestrator.resume import ResumeState


def _conventional(params: list[Any]) -> list[Any]:
    # A flag takes no value: no `<bool>` beside it in the help.
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _plain_usage(pieces: list[str]) -> list[str]:
    # Usage lines as operators know them: `run [OPTIONS] FILE`, not `{inventory}`.
    return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _plain_usage(super().collect_usage_pieces(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional(super().get_params(ctx))


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Safe rolling restarts of Windows/IIS farms over WinRM. Graceful, verified, resumable.",
)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

InventoryArg = Annotated[
    Path, typer.Argument(help="The inventory YAML file.", show_default=False, metavar="FILE")
]


def _print_version(value: bool) -> None:
    if value:
        out.print(f"orchestrator {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Safe rolling restarts of Windows/IIS farms over WinRM. Graceful, verified, resumable."""


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


@app.command(cls=_Command)
def validate(inventory: InventoryArg) -> None:
    """Check an inventory, its rollout policy and the files it names, without contacting any node."""
    from orchestrator.inventory.live import window_over
    from orchestrator.precheck import InvalidInput, load_balancer, static_plan
    from orchestrator.results import utc_now

    inv = _load(inventory)
    try:
        plan = static_plan(inv)
    except InvalidInput as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)
    _check_named_files(inv)  # before the drivers are built: one opens its CA bundle at once
    try:
        load_balancer(inv)
    except InvalidInput as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)
    if (over := window_over(inv, utc_now())) is not None:
        # Valid as a file, but `run` would refuse it tonight: worth saying, not failing on.
        err.print(f"[yellow]warning:[/] {over}; run would refuse it", soft_wrap=True)
    out.print(f"{inventory}: OK ({len(inv.nodes)} nodes, {_shape(plan)})", soft_wrap=True)


def _check_named_files(inv: Any) -> None:
    """Every file the inventory names is usable (exit 2 naming file:line:field for each that is not)."""
    from orchestrator.named_files import unreadable_files, unusable_balancer_files

    missing = unreadable_files(inv) + unusable_balancer_files(inv)
    if missing:
        for problem in missing[:-1]:
            err.print(f"[bold red]error:[/] {problem}", soft_wrap=True)
        _fail(str(missing[-1]), ExitCode.INVALID_INPUT)


def _shape(p: Plan) -> str:
    """What the strategy does, in a few words: a window is not a batch."""
    if p.strategy == "window":
        canary = ", a canary first" if p.canary_bake_seconds is not None else ""
        return f"strategy window: up to {p.limits.window} nodes in flight{canary}"
    return f"strategy batch: {len(p.batches)} batches"


@app.command(cls=_Command)
def plan(
    inventory: InventoryArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show the order, batches or window, and limits a run would follow (no node is contacted)."""
    from orchestrator.precheck import InvalidInput, static_plan

    inv = _load(inventory)
    try:
        p = static_plan(inv)
    except InvalidInput as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)
    if as_json:
        out.print_json(json.dumps(p.to_json()))
        return
    out.print(f"{inventory}: {_shape(p)}, order {p.order}", soft_wrap=True)
    if p.strategy == "window":
        table = Table("#", "node", "group", "starts")
        canary = p.canary_bake_seconds is not None
        for i, name in enumerate(p.nodes, 1):
            if canary and i == 1:
                when = f"alone (canary, then {p.canary_bake_seconds:g}s bake)"
            elif i <= (p.limits.window or 1) + (1 if canary else 0):
                when = "at the start"
            else:
                when = "when a slot frees"
            table.add_row(str(i), name, p.node_groups.get(name) or "-", when)
    else:
        table = Table("batch", "nodes")
        for i, batch in enumerate(p.batches, 1):
            label = f"{i} (canary)" if i == 1 and p.canary_bake_seconds is not None else str(i)
            table.add_row(label, ", ".join(batch))
    out.print(table)
    limits = p.limits
    lines = [
        f"at most {limits.max_unavailable} nodes out of rotation at once; "
        f"capacity floor: {limits.min_healthy} healthy nodes"
    ]
    if limits.groups:
        per_group = ", ".join(f"{g} at most {n}" for g, n in sorted(limits.groups.items()))
        lines.append(f"per group out of rotation: {per_group}")
    if p.pause_seconds and p.strategy == "batch":
        lines.append(f"pause between batches: {p.pause_seconds:g}s")
    if p.finish_by is not None:
        lines.append(f"change window ends {p.finish_by.isoformat()}")
    for line in lines:
        out.print(line, soft_wrap=True)


ReportOpt = Annotated[Path | None, typer.Option(help="Write the JSON report here.", metavar="PATH")]
EventsOpt = Annotated[Path | None, typer.Option(help="Append the JSONL event stream here.", metavar="PATH")]
JunitOpt = Annotated[Path | None, typer.Option(help="Write a JUnit XML report here.", metavar="PATH")]
HtmlOpt = Annotated[Path | None, typer.Option(help="Write an HTML timeline here.", metavar="PATH")]
PrometheusOpt = Annotated[
    Path | None,
    typer.Option(help="Write Prometheus metrics here (a node_exporter textfile, *.prom).", metavar="PATH"),
]
LogOpt = Annotated[str, typer.Option(help="debug, info, warning or error.", metavar="LEVEL")]


@app.command(cls=_Command)
def run(
    inventory: InventoryArg,
    report: ReportOpt = None,
    events: EventsOpt = None,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
    prometheus: PrometheusOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Roll the restart over the farm. Exit codes: see `docs/results.md`."""
    _roll(inventory, None, _Outputs(report, events, junit, html, prometheus), log_level)


@app.command(cls=_Command)
def resume(
    inventory: InventoryArg,
    run_id: Annotated[
        str | None, typer.Option("--run", help="The run to resume; default the latest.", metavar="RUN_ID")
    ] = None,
    report: ReportOpt = None,
    events: EventsOpt = None,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
    prometheus: PrometheusOpt = None,
    log_level: LogOpt = "warning",
) -> None:
    """Finish an interrupted or partly failed run: done nodes are skipped, the others resume at the
    phase that did not complete. Same limits as `run`."""
    _roll(inventory, run_id, _Outputs(report, events, junit, html, prometheus), log_level, resuming=True)


@dataclass(frozen=True)
class _Outputs:
    """Where a run writes its reports (each optional)."""

    report: Path | None
    events: Path | None
    junit: Path | None
    html: Path | None
    prometheus: Path | None

    def by_option(self) -> dict[str, Path | None]:
        """Each output under its option's name (`--report`, ...): every one is checked, a new one too."""
        return {f"--{f.name}": getattr(self, f.name) for f in fields(self)}


def _roll(
    inventory: Path,
    run_id: str | None,
    outputs: _Outputs,
    log_level: str,
    *,
    resuming: bool = False,
) -> NoReturn:
    from orchestrator.journal import JournalError
    from orchestrator.log import configure_logging
    from orchestrator.notify import Notifier
    from orchestrator.precheck import InvalidInput
    from orchestrator.report import (
        print_summary,
        write_html,
        write_json_report,
        write_junit,
        write_prometheus,
    )
    from orchestrator.report.events import EventStream, RunFinished, RunStarted
    from orchestrator.report.progress import LiveProgress
    from orchestrator.results import compute_totals, exit_code_for
    from orchestrator.rollout import Locked, Rollout, RunOptions

    inv = _load(inventory)
    _check_options(inv, log_level, outputs.by_option())
    _check_named_files(inv)
    configure_logging(log_level)
    state = _resume_state(inv, run_id) if resuming else None
    stream = EventStream(outputs.events) if outputs.events else None
    # A live view on a terminal, plain lines otherwise (cron mail, CI logs).
    progress = LiveProgress([n.name for n in inv.nodes], out)
    notifier = Notifier(inv.notify.webhooks)

    def started(event: RunStarted) -> None:
        progress.started(event)
        notifier.started(event)

    async def roll(rollout: Rollout) -> RunResult:
        try:
            return await rollout.run()
        finally:
            await notifier.settle()  # the start notification, bounded; it never fails the run

    try:
        options = RunOptions(recorder_events=stream, progress=progress, on_start=started)
        rollout = Rollout(inv, options, resume=state)
        with progress:
            result = asyncio.run(roll(rollout))
    except InvalidInput as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)
    except Locked as exc:
        _fail(f"another run holds the lock on {inventory}: {exc}", ExitCode.LOCKED)
    except JournalError as exc:
        # The journal's database is unreachable, or not ours: nothing was touched.
        _fail(str(exc), ExitCode.INTERNAL)
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
    for path, writer in (
        (outputs.report, write_json_report),
        (outputs.junit, write_junit),
        (outputs.html, write_html),
        (outputs.prometheus, write_prometheus),
    ):
        if path is not None:
            writer(result, path)
    print_summary(result, out)
    asyncio.run(notifier.finished(result))
    _prune_journal(inv)
    raise typer.Exit(int(code))


def _prune_journal(inv: Any) -> None:
    """Housekeeping after a run: finished runs older than `journal_keep_days` leave the journal."""
    import structlog

    from orchestrator.journal import Journal, JournalError
    from orchestrator.results import utc_now

    cutoff = utc_now() - timedelta(days=inv.journal_keep_days)
    try:
        with Journal(inv.journal) as journal:
            pruned = journal.prune(inv.path, cutoff)
    except (JournalError, OSError, sqlite3.Error) as exc:
        # The run is over and recorded; failing to tidy up must not change its exit code.
        structlog.get_logger("orchestrator.journal").warning("journal not pruned", error=str(exc))
        return
    if pruned:
        structlog.get_logger("orchestrator.journal").info(
            "journal pruned", runs=len(pruned), ended_before=cutoff.isoformat()
        )


def _check_options(inv: Any, log_level: str, outputs: dict[str, Path | None]) -> None:
    """Every option and local path the run needs, before anything is contacted (exit 2)."""
    from orchestrator.options import OptionError, check_run_options

    try:
        check_run_options(inv, log_level, outputs)
    except OptionError as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)


def _controllers(held_by: str | None, taken_by: str | None) -> str:
    """Which controller held a lease and which took it over, when they are named."""
    if held_by is None:
        return ""
    return f", controller {held_by}" + (f", taken over by controller {taken_by}" if taken_by else "")


def _beat(last: datetime | None) -> str:
    return f", last beat {last:%Y-%m-%d %H:%M:%SZ}" if last is not None else ""


def _say_recovery(result: RunResult) -> None:
    recovery = result.recovery
    if recovery is None:
        return
    stale = recovery.lock_takeover
    if stale is not None:
        err.print(
            f"[yellow]warning:[/] took over the lock of run {stale.run_id} (pid {stale.pid} on {stale.host}"
            f"{_controllers(stale.controller, stale.taken_by)}, since {stale.since:%Y-%m-%d %H:%M:%SZ}"
            f"{_beat(stale.last_beat)}): {stale.why}",
            soft_wrap=True,
        )
    if recovery.repaired and "resumes" not in result.plan:
        steps = ", ".join(f"{n} at {p}" for n, p in recovery.repaired.items())
        err.print(
            f"[yellow]warning:[/] run {recovery.run_id} did not finish; repaired first what it left "
            f"part-way: {steps}",
            soft_wrap=True,
        )


def _journal(inv: Any) -> Journal:
    """The inventory's journal for reading; an unreachable database is one line, exit 1."""
    from orchestrator.journal import Journal, JournalUnavailable

    try:
        return Journal(inv.journal, outage_seconds=inv.lease.outage)
    except JournalUnavailable as exc:
        _fail(str(exc), ExitCode.INTERNAL)


def _recorded(inv: Any, run_id: str | None) -> tuple[RunResult, list[NodeState], str] | None:
    """A run of this inventory from its journal (the latest by default); None when none is recorded.
    An unknown run id, or one of another inventory, is an input error."""
    from orchestrator.journal import JournalError

    if not inv.journal.exists():
        return None
    _check_options(inv, "warning", {})
    with _journal(inv) as journal:
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


@app.command(cls=_Command)
def status(
    inventory: InventoryArg,
    live: Annotated[
        bool,
        typer.Option(
            "--live", help="Also read every node now (services, health, balancer); mark differences."
        ),
    ] = False,
    concurrency: Annotated[
        int, typer.Option(help="With --live: nodes read at once.", min=1, max=256, metavar="N")
    ] = 16,
) -> None:
    """What the last run of this inventory did, and which nodes are out of rotation and why."""
    from orchestrator.report import print_summary

    inv = _load(inventory)
    recorded = _recorded(inv, None)
    if recorded is None:
        out.print(f"no run recorded for {inventory}")
    else:
        result = recorded[0]
        print_summary(result, out)
        for line in _follow_up(inv, result):
            out.print(line, soft_wrap=True)
    if live:
        _live_status(inv, {s.name: s for s in recorded[1]} if recorded else {}, concurrency)


def _live_status(inv: Any, states: dict[str, NodeState], concurrency: int) -> None:
    from orchestrator.live_status import compare, read_farm
    from orchestrator.precheck import InvalidInput, load_balancer

    try:
        lb = load_balancer(inv)
    except InvalidInput as exc:
        _fail(str(exc), ExitCode.INVALID_INPUT)
    nodes = asyncio.run(read_farm(inv, states, lb, concurrency=concurrency))
    columns = ("node", "journal", "services now", "health now", "balancer", "differences")
    rows: list[tuple[str, ...]] = []
    differing = 0
    for node in nodes:
        state = states.get(node.name)
        differences = compare(state, node)
        differing += bool(differences)
        journal = "-" if state is None else f"{state.outcome or 'in flight'}, rotation {state.rotation}"
        services = ", ".join(f"{k} {v}" for k, v in sorted(node.services.items())) or "-"
        rows.append(
            (
                ("! " if differences else "  ") + node.name,
                journal,
                services,
                node.health or "-",
                f"{node.rotation} ({node.balancer})" if node.rotation else node.balancer or f"- ({lb.name})",
                "; ".join(differences) or "as recorded",
            )
        )
    if out.is_terminal:
        table = Table(*columns, title=f"live state of {inv.path}", title_justify="left")
        for row in rows:
            style = "bold red" if row[-1] != "as recorded" else ""
            table.add_row(*(Text(cell) for cell in row), style=style)
        out.print(table)
    else:
        from orchestrator.report.console import plain_table

        for line in plain_table([columns, *rows]):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    summary = (
        f"{differing} of {len(nodes)} nodes differ from the journal"
        if differing
        else (f"all {len(nodes)} nodes as the journal says")
    )
    out.print(summary, markup=False, highlight=False)


def left_out_reason(node: NodeState) -> str:
    """Why a node is out of rotation. A run killed in the middle of a node recorded no reason: its
    last journalled phase is what the operator can act on (where the next run picks it up)."""
    if node.reason:
        return node.reason
    if node.last_phase:
        return f"no reason recorded; last journalled: {node.last_phase} {node.last_status or 'started'}"
    return "no reason recorded"


def _follow_up(inv: Any, result: RunResult) -> list[str]:
    """What the operator should know beyond the table: a lock taken from a dead run, the nodes
    out of rotation and why, and what is left to do (or whether the run is still going)."""
    with _journal(inv) as journal:
        left_out = journal.nodes_out_of_rotation(result.run_id)
        not_done = [n for n in journal.unfinished_nodes(result.run_id) if n.outcome != "skipped"]
        takeovers = [t for t in journal.lock_takeovers(inv.path) if t.run_id == result.run_id]
        holder = journal.lock_holder(inv.path)
    lines = [
        f"run {result.run_id} took over the lock of run {t.stale_run_id} (pid {t.stale_pid} on "
        f"{t.stale_host}{_controllers(t.stale_controller, t.controller)}, since "
        f"{t.stale_since:%Y-%m-%d %H:%M:%SZ}{_beat(t.stale_last_beat)}): {t.why}"
        for t in takeovers
    ]
    if left_out:
        reasons = "; ".join(f"{n.name}: {left_out_reason(n)}" for n in left_out)
        lines.append(f"out of rotation: {reasons}")
    if result.outcome == "incomplete":
        if holder is not None and holder[0].run_id == result.run_id and holder[1]:
            held = holder[0]
            since = f"{held.since:%Y-%m-%d %H:%M:%SZ}"
            lines.append(
                f"run {result.run_id} is in progress (pid {held.pid} on {held.host}"
                f"{_controllers(held.controller, None)}, since {since}{_beat(held.last_beat)})"
            )
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


@app.command(cls=_Command)
def report(
    inventory: InventoryArg,
    run_id: Annotated[
        str | None, typer.Option("--run", help="A run id; default the latest.", metavar="RUN_ID")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="json, junit, html or prometheus.", metavar="FORMAT")
    ] = "json",
) -> None:
    """Rebuild a run's report from the journal (works after a crash) and print it."""
    from orchestrator.report import html_timeline, junit_xml, prometheus_text, report_json

    inv = _load(inventory)
    renderers = {
        "json": report_json,
        "junit": junit_xml,
        "html": html_timeline,
        "prometheus": prometheus_text,
    }
    if fmt not in renderers:
        _fail(f"--format must be one of {', '.join(renderers)}", ExitCode.INVALID_INPUT)
    recorded = _recorded(inv, run_id)
    if recorded is None:
        _fail(f"no run recorded for {inventory} (journal {inv.journal})", ExitCode.INVALID_INPUT)
    sys.stdout.write(renderers[fmt](recorded[0]))


@app.command(cls=_Command)
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
    cls=_Command,
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


@app.command(cls=_Command)
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    app()
