"""`make demo` runs on whatever engine it is given, a homelab's real one included: it must never take
down a project that is not its own (`compose -p NAME down --volumes` removes every container and
volume labelled NAME). Real engine; the guard is examples/demo_projects.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_backups import BUSYBOX, sh

sys.path.insert(0, str(REPO / "examples"))
import demo_projects  # examples/ is not a package: found through the path set above

pytestmark = pytest.mark.docker


STACK = """\
services:
  db:
    image: {image}
    command: ["sleep", "300"]
    volumes: [data:/data]
volumes:
  data: {{}}
"""


def compose_up(project: str, directory: Path) -> None:
    """A real Compose project ``project`` run from ``directory``, with its data volume."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(STACK.format(image=BUSYBOX))
    sh("docker", "compose", "-p", project, "--project-directory", str(directory), "up", "-d")


def containers_of(name: str) -> list[str]:
    return sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={name}").split()


def volumes_of(name: str) -> list[str]:
    return sh("docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={name}").split()


def test_the_demo_refuses_names_it_does_not_own_and_tears_down_only_its_own(
    docker_engine: None, project_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo, root = tmp_path / "demo", tmp_path / "demo" / "stacks"
    monkeypatch.setattr(demo_projects, "PROJECTS", (project_name,))
    # Someone's real stack under that name, stopped: its containers are gone, its data volume is not.
    compose_up(project_name, tmp_path / "srv" / "real")
    sh("docker", "rm", "-f", *containers_of(project_name))
    with pytest.raises(SystemExit, match=f"volumes of a project '{project_name}'"):
        demo_projects.claim(demo, root)
    assert not (demo / "projects.txt").exists()
    # Running again: even a (stale) record of ours must not let teardown near it.
    compose_up(project_name, tmp_path / "srv" / "real")
    demo_projects.record(demo)
    with pytest.raises(SystemExit, match="srv/real"):
        demo_projects.claim(demo, root)
    demo_projects.teardown(demo, root)
    assert volumes_of(project_name) == [f"{project_name}_data"] and containers_of(project_name)

    # The demo's own project (run from under the demo's root, its name recorded): torn down, data too.
    sh("docker", "rm", "-f", *containers_of(project_name))
    compose_up(project_name, root / project_name)
    demo_projects.claim(demo, root)
    demo_projects.teardown(demo, root)
    assert volumes_of(project_name) == [] and containers_of(project_name) == []
