"""Search scopes as promises: stack, service, tags and time bounds return exactly the records in
scope, on the real embedded store (BM25 only: no model needed, so it stays fast)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.memory.edge import EdgeStore
from server.memory.service import Memory
from tests.memory_data.helpers import lexical_model


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Memory, Clock, dict[str, str]]]:
    clock = Clock()
    memory = Memory(lambda: EdgeStore(tmp_path_factory.mktemp("filters")), lexical_model(), clock=clock)
    rows = {
        "shop-web": ("shop", "web", ["tls"], 1000.0),
        "shop-db": ("shop", "db", ["disk"], 2000.0),
        "blog-web": ("blog", "web", ["tls", "proxy"], 3000.0),
        "loose": (None, None, [], 4000.0),
    }
    ids = {}
    for key, (stack, service, tags, ts) in rows.items():
        result = memory.record_incident(title=f"{key} outage", symptoms="gateway failure after restart", stack=stack,
                                        service=service, tags=tags, occurred_at=1_000_000.0 - 5000 + ts)
        ids[result.incident_id] = key
    clock.now = 1_000_000.0
    try:
        yield memory, clock, ids
    finally:
        memory.close()


def found(recorded: tuple[Memory, Clock, dict[str, str]], **scope: object) -> set[str]:
    memory, _, ids = recorded
    hits = memory.search_incidents("gateway failure", limit=20, **scope)  # type: ignore[arg-type]
    return {ids[h.incident_id] for h in hits.results}


T0 = 1_000_000.0 - 5000


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({}, {"shop-web", "shop-db", "blog-web", "loose"}),
        ({"stack": "shop"}, {"shop-web", "shop-db"}),
        ({"stack": "  Shop "}, {"shop-web", "shop-db"}),
        ({"stack": ""}, {"shop-web", "shop-db", "blog-web", "loose"}),
        ({"stack": "nothere"}, set()),
        ({"service": "web"}, {"shop-web", "blog-web"}),
        ({"stack": "shop", "service": "web"}, {"shop-web"}),
        ({"tags": ["TLS"]}, {"shop-web", "blog-web"}),
        ({"tags": ["disk", "proxy"]}, {"shop-db", "blog-web"}),  # any of the tags
        ({"tags": []}, {"shop-web", "shop-db", "blog-web", "loose"}),
        ({"since": T0 + 1500}, {"shop-db", "blog-web", "loose"}),
        ({"since": T0 + 2000}, {"shop-db", "blog-web", "loose"}),  # bounds are inclusive
        ({"until": T0 + 2500}, {"shop-web", "shop-db"}),
        ({"until": T0 + 2000}, {"shop-web", "shop-db"}),
        ({"since": T0 + 1500, "until": T0 + 3500}, {"shop-db", "blog-web"}),
        ({"since": "1h"}, {"shop-db", "blog-web", "loose"}),  # 3600 s before the clock's now
        ({"since": "", "until": ""}, {"shop-web", "shop-db", "blog-web", "loose"}),
        ({"until": "1h"}, {"shop-web"}),  # relative to the memory's clock, not the wall clock
        ({"stack": "shop", "tags": ["tls"], "since": T0 + 500}, {"shop-web"}),
    ],
)
def test_search_scope_returns_exactly_what_is_in_scope(recorded: tuple[Memory, Clock, dict[str, str]],
                                                       scope: dict[str, object], expected: set[str]) -> None:
    assert found(recorded, **scope) == expected


def test_status_counts_by_kind(recorded: tuple[Memory, Clock, dict[str, str]]) -> None:
    memory, _, _ = recorded
    status = memory.status()
    assert (status.incidents, status.patterns, status.deployments) == (4, 0, 0)


def test_store_filter_translation(tmp_path: Path) -> None:
    from server.memory.store import Where

    store = EdgeStore(tmp_path)
    try:
        qe = store._qe
        assert store._filter(Where()) is None
        f = store._filter(Where(equals={"kind": "incident"}, any_of={"tags": ["a", "b"]}, ts_gte=1.0))
        assert len(f.must) == 3 and f.must_not is None
        only_range = store._filter(Where(ts_lte=5.0))
        assert len(only_range.must) == 1
        missing = store._filter(Where(missing_dense=True))
        assert missing.must is None and len(missing.must_not) == 1
        assert isinstance(missing.must_not[0], qe.HasVectorCondition)
    finally:
        store.close()
