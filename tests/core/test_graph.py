"""Service ordering: dependents stop first, dependencies start first, whatever the input order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.actions.graph import CycleError, start_order, stop_order, with_dependencies

IIS = {"W3SVC": ["WAS", "HTTP"], "W3LOGSVC": ["W3SVC"], "WinRM": ["RPCSS", "HTTP"], "WAS": ["RPCSS"]}


def test_iis_stop_and_start_order() -> None:
    members = ["WAS", "W3LOGSVC", "W3SVC"]
    assert stop_order(members, IIS) == ["W3LOGSVC", "W3SVC", "WAS"]
    assert start_order(members, IIS) == ["WAS", "W3SVC", "W3LOGSVC"]


def test_names_match_case_insensitively() -> None:
    assert start_order(["w3svc", "was"], {"w3svc": ["WAS"]}) == ["was", "w3svc"]


def test_edges_outside_the_set_are_ignored() -> None:
    # HTTP and RPCSS are not being restarted: they do not constrain the order.
    assert start_order(["WinRM", "W3SVC"], IIS) == ["W3SVC", "WinRM"]


def test_cycle_is_an_error() -> None:
    with pytest.raises(CycleError, match="cycle"):
        start_order(["A", "B"], {"A": ["B"], "B": ["A"]})


def test_with_dependencies_adds_only_members_required_transitively() -> None:
    within = ["HTTP", "WAS", "W3SVC", "W3LOGSVC", "WinRM"]
    assert with_dependencies(["W3SVC"], within, IIS) == {"W3SVC", "WAS", "HTTP"}
    assert with_dependencies(["W3LOGSVC"], ["W3LOGSVC", "W3SVC"], IIS) == {"W3LOGSVC", "W3SVC"}


@given(
    st.dictionaries(
        st.sampled_from("ABCDEFG"), st.lists(st.sampled_from("ABCDEFG"), max_size=3), max_size=7
    ).filter(lambda g: all(d < k for k, deps in g.items() for d in deps))  # acyclic: deps sort earlier
)
def test_every_dependency_starts_before_its_dependent(graph: dict[str, list[str]]) -> None:
    members = sorted(set(graph) | {d for deps in graph.values() for d in deps})
    order = start_order(members, graph)
    assert sorted(order) == members
    for name, deps in graph.items():
        for dep in deps:
            if dep != name:
                assert order.index(dep) < order.index(name)
    assert stop_order(members, graph) == list(reversed(order))
