"""docs/architecture.md's lifecycle diagram is the state machine's table, no more, no less."""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.lifecycle import EVENT_NAMES, STATES, TRANSITIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
_EDGE = re.compile(r"^\s*(\[\*\]|\w+)\s*-->\s*(\w+)\s*(?::\s*(\w+))?\s*$")


def diagram_edges(text: str) -> set[tuple[str, str, str]]:
    blocks = re.findall(r"```mermaid\n(stateDiagram-v2\n.*?)```", text, re.S)
    assert len(blocks) == 1, "one lifecycle diagram expected in docs/architecture.md"
    edges: set[tuple[str, str, str]] = set()
    for line in blocks[0].splitlines()[1:]:
        if not line.strip():
            continue
        match = _EDGE.match(line)
        assert match is not None, f"not a transition: {line!r}"
        source, target, event = match.groups()
        if source == "[*]":
            assert target == "queued", line
            continue
        assert event is not None, f"a transition without its event: {line!r}"
        edges.add((source, event, target))
    return edges


def test_the_documented_diagram_is_the_transition_table() -> None:
    edges = diagram_edges(DOC.read_text())
    assert edges == set(TRANSITIONS), {
        "documented, not in the table": sorted(edges - set(TRANSITIONS)),
        "in the table, not documented": sorted(set(TRANSITIONS) - edges),
    }
    assert {s for e in edges for s in (e[0], e[2])} | {"queued"} == set(STATES)
    assert {e[1] for e in edges} == set(EVENT_NAMES)


def test_a_diagram_that_drifts_is_caught() -> None:
    text = DOC.read_text()
    dropped = text.replace("    done --> failed : bake_failed\n", "")
    assert diagram_edges(dropped) != set(TRANSITIONS)
    renamed = text.replace(
        "stopping --> starting : phase_finished", "stopping --> verifying : phase_finished"
    )
    assert diagram_edges(renamed) != set(TRANSITIONS)
