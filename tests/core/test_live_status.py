"""How the live state is set against the journal (pure)."""

from __future__ import annotations

from orchestrator.journal import NodeState
from orchestrator.live_status import LiveNode, compare


def state(**changes: object) -> NodeState:
    base: dict[str, object] = {
        "name": "web-01",
        "host": "h",
        "group": None,
        "last_phase": "undrain",
        "last_status": "ok",
        "rotation": "in",
        "outcome": "done",
        "reason": None,
        "services": {"W3SVC": "Running", "WAS": "Running"},
    }
    return NodeState(**(base | changes))  # type: ignore[arg-type]


def test_agreement_is_no_difference() -> None:
    live = LiveNode("web-01", services={"W3SVC": "Running", "WAS": "Running"}, healthy=True, rotation="in")
    assert compare(state(), live) == []


def test_every_disagreement_is_named() -> None:
    live = LiveNode("web-01", services={"W3SVC": "Stopped"}, healthy=False, rotation="out")
    assert compare(state(), live) == [
        "W3SVC: journal Running, now Stopped",
        "WAS: journal Running, now missing",
        "rotation: journal in, balancer out",
        "health: done in the journal, failing now",
    ]


def test_an_unreadable_node_or_an_unasked_balancer() -> None:
    assert compare(state(), LiveNode("web-01", error="transport: refused")) == [
        "not readable: transport: refused"
    ]
    # No balancer to ask (driver none), and a rotation the journal never confirmed: nothing to compare.
    live = LiveNode("web-01", services={"W3SVC": "Running", "WAS": "Running"}, healthy=True, rotation=None)
    assert compare(state(rotation="unknown"), live) == []
    assert compare(None, LiveNode("web-01", healthy=False)) == ["health failing (no run recorded)"]


def test_a_balancer_failing_its_check_on_a_server_in_rotation() -> None:
    services = {"W3SVC": "Running", "WAS": "Running"}
    down = LiveNode(
        "web-01", services=services, healthy=True, rotation="in", balancer="DOWN", balancer_healthy=False
    )
    assert compare(state(), down) == ["balancer: done in the journal, its health check says DOWN"]
    maint = LiveNode(
        "web-01", services=services, healthy=True, rotation="out", balancer="MAINT", balancer_healthy=False
    )
    assert compare(state(), maint) == ["rotation: journal in, balancer out"]
