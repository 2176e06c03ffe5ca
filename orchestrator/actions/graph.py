"""Service dependency ordering. Pure: the remote layer reads the graph, this decides the order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class CycleError(ValueError):
    pass


def start_order(services: Iterable[str], requires: Mapping[str, Iterable[str]]) -> list[str]:
    """Dependencies before the services that need them (only edges inside `services` count).

    Ties keep a stable, sorted order so runs are reproducible.
    """
    members = {s.upper(): s for s in services}
    deps = {
        key: {d.upper() for d in requires.get(name, ()) if d.upper() in members and d.upper() != key}
        for key, name in members.items()
    }
    order: list[str] = []
    done: set[str] = set()
    while len(done) < len(members):
        ready = sorted(k for k in members if k not in done and deps[k] <= done)
        if not ready:
            raise CycleError(f"dependency cycle among {sorted(set(members) - done)}")
        for key in ready:
            order.append(members[key])
            done.add(key)
    return order


def stop_order(services: Iterable[str], requires: Mapping[str, Iterable[str]]) -> list[str]:
    """Dependents before the services they depend on."""
    return list(reversed(start_order(services, requires)))


def with_dependencies(
    roots: Iterable[str], within: Iterable[str], requires: Mapping[str, Iterable[str]]
) -> set[str]:
    """`roots` plus everything inside `within` they transitively require."""
    allowed = {s.upper(): s for s in within}
    by_key = {k.upper(): v for k, v in requires.items()}
    out: dict[str, str] = {}
    todo = [r for r in roots]
    while todo:
        name = todo.pop()
        key = name.upper()
        if key in out:
            continue
        out[key] = allowed.get(key, name)
        todo.extend(d for d in by_key.get(key, ()) if d.upper() in allowed)
    return set(out.values())
