"""scale_service's pure parts and its override entry, without an engine: the entry spelled as the
files spell it, what survives a deploy's clear_pins and a rollback's write_pins, the rolling rules,
the suggestion, and the rollback's restore putting the previous entry back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.deploy import override
from server.errors import ConfirmationRequired, DsmError
from server.scale_models import Ask
from server.scale_rules import check_rules, describe, merged, new_entry, suggest

MIB = 1024**2


def test_entry_follows_the_files_spelling() -> None:
    # The files say mem_limit/cpus and nothing about replicas: the same keys, and `scale` (a deploy
    # block that was not there would change the config hash and recreate running containers).
    body = {"image": "x", "mem_limit": "67108864", "cpus": 0.5}
    entry = new_entry(body, {}, Ask(replicas=3, memory="128m", cpus=0.25, reserve_cpus=0.1))
    assert entry == {"scale": 3, "mem_limit": "128m", "cpus": 0.25,
                     "deploy": {"resources": {"reservations": {"cpus": 0.1}}}}
    # The files say deploy.*: the same spelling (Compose refuses two spellings of one setting).
    body2 = {"image": "x", "deploy": {"replicas": 2, "resources": {"limits": {"memory": "1g"}}}}
    entry2 = new_entry(body2, {}, Ask(replicas=4, memory="1.5g", reserve_memory="256m"))
    assert entry2 == {"deploy": {"replicas": 4, "resources": {"limits": {"memory": "1536m"},
                                                             "reservations": {"memory": "256m"}}}}
    assert describe(body2, merged(body2, entry2)) == ["replicas 2 -> 4", "memory limit 1.00 GiB -> 1.50 GiB",
                                                      "memory reservation none -> 256 MiB"]
    # An earlier entry is kept where the new ask says nothing.
    assert new_entry(body, {"scale": 3, "cpus": 0.25}, Ask(memory="96m")) == {"scale": 3, "cpus": 0.25,
                                                                              "mem_limit": "96m"}
    with pytest.raises(DsmError, match="at least 6m"):
        new_entry(body, {}, Ask(memory="1k"))


def test_scale_entries_survive_pins_cleared_and_written(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: x\n  db:\n    image: y\n")
    override.write_scale(tmp_path, "web", {"scale": 3, "mem_limit": "96m"})
    assert "COMPOSE_FILE=compose.yaml:compose.dsm.yaml" in (tmp_path / ".env").read_text()
    assert not override.holds_pins(tmp_path)
    # A rollback pins images: the scale entry stays beside the pin.
    override.write_pins(tmp_path, {"web": "dsm-pin/s-web:1", "db": "dsm-pin/s-db:1"}, originals={"web": "x"},
                        defined=["web", "db"])
    assert override.holds_pins(tmp_path) and override.scale_entry(tmp_path, "web") == {"scale": 3,
                                                                                       "mem_limit": "96m"}
    # A deploy clears the pins: the scale entry stays, and so does the file in COMPOSE_FILE.
    assert override.clear_pins(tmp_path)
    assert override.read_override(tmp_path) == {"services": {"web": {"scale": 3, "mem_limit": "96m"}}}
    assert "compose.dsm.yaml" in (tmp_path / ".env").read_text()
    # Writing the service's previous entry (none) back empties the file: it goes, and so does our line.
    override.write_scale(tmp_path, "web", {})
    assert not (tmp_path / "compose.dsm.yaml").exists() and "COMPOSE_FILE" not in (tmp_path / ".env").read_text()


def test_a_pinned_override_stays_out_of_the_deploys_view_an_unpinned_one_stays_in(tmp_path: Path) -> None:
    from server.deploy.project import compose_project
    from server.project import ComposeProject

    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: x\n")
    stack: Any = type("S", (), {"directory": tmp_path, "project": ComposeProject(directory=tmp_path, name="s"),
                                "name": "s"})()
    override.write_scale(tmp_path, "web", {"scale": 2})
    assert compose_project(stack, with_override=False).overrides == (tmp_path / "compose.dsm.yaml",)
    override.write_pins(tmp_path, {"web": "dsm-pin/s-web:1"})
    assert compose_project(stack, with_override=False).overrides == ()
    assert compose_project(stack).overrides == (tmp_path / "compose.dsm.yaml",)


def test_the_rolling_rules() -> None:
    check_rules("web", {"container_name": "w", "ports": [{"published": "8080"}]}, 1, confirm=False)  # one: fine
    with pytest.raises(DsmError, match="rule container-name"):
        check_rules("web", {"container_name": "w"}, 2, confirm=True)
    with pytest.raises(DsmError, match="rule fixed-host-port"):
        check_rules("web", {"ports": [{"target": 80, "published": "8080"}]}, 2, confirm=True)
    check_rules("web", {"ports": [{"target": 80, "published": "8080-8082"}, {"target": 81}]}, 3, confirm=False)
    rw = {"volumes": [{"type": "volume", "source": "data", "target": "/d"}]}
    with pytest.raises(ConfirmationRequired, match="two writers on one data directory can corrupt data"):
        check_rules("web", rw, 2, confirm=False)
    check_rules("web", rw, 2, confirm=True)
    check_rules("web", {"volumes": [{"type": "volume", "source": "data", "target": "/d", "read_only": True},
                                    {"type": "bind", "source": "/etc/x", "target": "/x"}]}, 2, confirm=False)


def test_the_suggestion_is_headroom_over_the_observed_peak() -> None:
    s = suggest([100 * MIB, None], [40 * MIB, 70 * MIB], [12.0, 30.0])
    # Peak 100 MiB (the second container keeps none: its current use counts) x 1.5 -> 160 MiB.
    assert s.memory == "160m" and s.reserve_memory == "70m" and s.cpus == 0.45
    assert "peak 100 MiB" in s.basis
    assert suggest([], [], []).memory is None
    assert suggest([MIB], [MIB], [None]).memory == "32m"  # never below 32 MiB; CPU not sampled


@pytest.mark.anyio
async def test_the_rollback_restore_puts_the_previous_entry_back(tmp_path: Path) -> None:
    from server.deploy.executor import Restored
    from server.scale import Scaling

    class Inner:
        async def restore(self, snapshot: Any, steps: Any) -> Restored:
            # The backup was taken with the new entry in place: restoring files brings it back.
            override.write_pins(tmp_path, {"web": "dsm-pin/s-web:1"})
            return Restored(None, {"web": "dsm-pin/s-web:1"}, ["files restored"])

    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: x\n")
    override.write_scale(tmp_path, "web", {"scale": 4, "mem_limit": "256m"})
    scaling = Scaling(Inner(), None, tmp_path, "web", 4, {"mem_limit": "96m"})  # type: ignore[arg-type]
    restored = await scaling.restore(None, None)  # type: ignore[arg-type]
    assert override.scale_entry(tmp_path, "web") == {"mem_limit": "96m"}
    assert override.pinned_images(tmp_path) == {"web": "dsm-pin/s-web:1"}
    assert restored.pins == {"web": "dsm-pin/s-web:1"} and "previous replicas and limits" in restored.notes[-1]
