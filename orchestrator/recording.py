"""Where a run's progress goes: the journal first (so a crash leaves the truth on disk), then the
event stream, the live display and the log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from orchestrator.journal import Before, Journal
from orchestrator.report.console import LiveProgress
from orchestrator.report.events import EventStream, NodeFinished, PhaseEvent, RunStarted
from orchestrator.results import ErrorInfo, NodeOutcome, Phase, PhaseStatus, Rotation, utc_now

log = structlog.get_logger("orchestrator.run")


class RunRecorder:
    def __init__(
        self,
        run_id: str,
        journal: Journal,
        events: EventStream | None = None,
        progress: LiveProgress | None = None,
    ) -> None:
        self.run_id = run_id
        self.journal = journal
        self.events = events
        self.progress = progress

    def phase(
        self, node: str, phase: Phase, status: PhaseStatus, detail: str = "", error: ErrorInfo | None = None
    ) -> None:
        at = utc_now()
        self.journal.record_phase(self.run_id, node, phase, status, at, detail, error)
        event = PhaseEvent(
            at=at, run_id=self.run_id, node=node, phase=phase, status=status, detail=detail, error=error
        )
        self._emit(event)
        fields: dict[str, Any] = {"node": node, "phase": phase, "status": status}
        if detail:
            fields["detail"] = detail
        if error is not None:
            fields["error_kind"] = error.kind
            fields["error"] = error.message
            log.warning("phase", **fields)
        else:
            log.info("phase", **fields)

    def node_state(
        self,
        node: str,
        *,
        rotation: Rotation,
        services: dict[str, str],
        outcome: str,
        reason: str | None,
    ) -> None:
        node_outcome: NodeOutcome = outcome  # type: ignore[assignment]
        self.journal.set_node_state(
            self.run_id,
            node,
            rotation=rotation,
            services=services,
            outcome=node_outcome,
            reason=reason,
        )
        self._emit(
            NodeFinished(
                at=utc_now(),
                run_id=self.run_id,
                node=node,
                outcome=node_outcome,
                rotation=rotation,
                reason=reason,
            )
        )
        log.info("node", node=node, outcome=outcome, rotation=rotation, reason=reason)

    def run_started(self, event: RunStarted) -> None:
        """The run is in the journal; the event stream says so before any node event."""
        if self.events is not None:
            self.events.write(event)
        log.info("run started", run_id=self.run_id, nodes=len(event.nodes))

    def before(self, befores: Mapping[str, Before]) -> None:
        """Written ahead of any change: what ran on each node the run is about to touch."""
        self.journal.record_before(self.run_id, befores)
        log.info("recorded what runs before the run", nodes=sorted(befores))

    def rotation(self, node: str, rotation: Rotation) -> None:
        self.journal.set_node_state(self.run_id, node, rotation=rotation)
        log.info("rotation", node=node, rotation=rotation)

    def _emit(self, event: PhaseEvent | NodeFinished) -> None:
        if self.events is not None:
            self.events.write(event)
        if self.progress is not None:
            self.progress.update(event)
