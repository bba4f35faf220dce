"""Two deploy promises a planted bug survived (issue 15), pinned at the pipeline's private helpers
(``_verify_default``, ``_watched``: reaching them through ``deploy_stack`` needs the whole
pipeline, and the behaviour is exactly these functions): the longest per-service ``verify_s``
wins, and a deploy of some services watches the dependencies ``up`` starts with them."""

from __future__ import annotations

from pathlib import Path

from server.deploy.steps import DEFAULT_VERIFY_S
from server.deploy.steps import verify_default as _verify_default
from server.deploy.steps import watched as _watched
from server.settings import Settings
from tests.deploy_fakes import World, plan


def _world(tmp_path: Path) -> World:
    directory = tmp_path / "stacks" / "unit"
    directory.mkdir(parents=True)
    return World(Settings(stacks_root=tmp_path / "stacks", state_dir=tmp_path / "state"), directory)


def test_the_longest_per_service_verify_s_wins(tmp_path: Path) -> None:
    world = _world(tmp_path)
    services = {"web": {"image": "w"}, "db": {"image": "d"}, "cache": {"image": "c"}}
    stack = world.stack(services, service_dsm={"web": {"verify_s": 30}, "db": {"verify_s": 90}},
                        x_dsm={"verify_s": 10})
    assert _verify_default(stack, None) == 90.0  # the whole stack: the longest of any service
    assert _verify_default(stack, ["db", "web"]) == 90.0
    assert _verify_default(stack, ["web", "db"]) == 90.0  # not the first, not the last: the longest
    assert _verify_default(stack, ["web"]) == 30.0  # only the services deployed count
    assert _verify_default(stack, ["cache"]) == 10.0  # none set on them: the stack's own
    plain = world.stack(services)
    assert _verify_default(plain, None) == DEFAULT_VERIFY_S


def test_a_deploy_of_some_services_watches_the_dependencies_up_starts(tmp_path: Path) -> None:
    world = _world(tmp_path)
    stack = world.stack({  # as `compose config` renders it: depends_on always in its long form
        "web": {"image": "w", "depends_on": {"api": {"condition": "service_healthy"}}},
        "api": {"image": "a", "depends_on": {"db": {"condition": "service_started"}}},
        "db": {"image": "d"},
        "cache": {"image": "c"},
        "worker": {"image": "k", "depends_on": {"db": {"condition": "service_started"}}},
    })
    the_plan = plan(web="recreate", api="unchanged", db="recreate", cache="recreate", worker="recreate")
    assert {w.service for w in _watched(stack, the_plan, ["web"])} == {"web", "api", "db"}
    assert {w.service for w in _watched(stack, the_plan, ["worker"])} == {"worker", "db"}
    assert {w.service for w in _watched(stack, the_plan, None)} == {"web", "api", "db", "cache", "worker"}
    gone = plan(web="recreate", api="remove", db="recreate")
    assert {w.service for w in _watched(stack, gone, ["web"])} == {"web", "db"}  # removed: nothing to wait for
