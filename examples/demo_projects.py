"""The Compose projects the demo creates, and the guard that keeps it off anyone else's.

The demo runs on the engine it is given, which may be a homelab's real engine. Its projects have
ordinary names (`supabase`, `chat`, ...), and `docker compose -p NAME down --volumes` removes every
container AND volume labelled with that project name, wherever it came from. So before the demo
creates anything, every name is checked: a container of that project from another directory, or a
volume of it that a previous demo run did not create, stops the demo with one line naming it.
Teardown removes only the projects this demo recorded as its own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

PROJECTS = ("homepage", "shop", "monitoring", "chat", "netfix", "supabase")


def _lines(*argv: str) -> list[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed: {out.stderr.strip()[:300]} "
                         "(is the engine running? make provision)")
    return [line for line in out.stdout.splitlines() if line.strip()]


def _under(path: str, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def foreign(name: str, root: Path, ours: set[str]) -> str | None:
    """Why project ``name`` on the engine is not the demo's (None: free, or the demo's own)."""
    label = f"label=com.docker.compose.project={name}"
    dirs = _lines("docker", "ps", "-a", "--filter", label, "--format",
                  '{{.Label "com.docker.compose.project.working_dir"}}')
    elsewhere = sorted({d for d in dirs if not _under(d, root)})
    if elsewhere:
        return f"containers of a project {name!r} from {elsewhere[0]}"
    volumes = _lines("docker", "volume", "ls", "-q", "--filter", label)
    if volumes and name not in ours:
        return f"volumes of a project {name!r} ({', '.join(volumes[:3])})"
    return None


def recorded(demo: Path) -> set[str]:
    """The projects an earlier demo run created here (written before it created them)."""
    path = demo / "projects.txt"
    return set(path.read_text().split()) if path.exists() else set()


def claim(demo: Path, root: Path) -> None:
    """Refuse to go on if any demo project name is taken on this engine; else record them as ours."""
    ours = recorded(demo)
    taken = [why for name in PROJECTS if (why := foreign(name, root, ours))]
    if taken:
        raise SystemExit("the demo would reuse Compose project names this engine already has: "
                         + "; ".join(taken) + ". Nothing was changed. Run the demo against another engine "
                         "(DOCKER_HOST) or remove those projects first.")
    record(demo)


def record(demo: Path) -> None:
    demo.mkdir(parents=True, exist_ok=True)
    (demo / "projects.txt").write_text("\n".join(PROJECTS) + "\n")


def forget_pins(state_dir: Path) -> None:
    """Untag the images an earlier run's backups pinned (its state is about to be wiped, and with it
    the only record of them); an image a container still uses keeps its other tags."""
    import json

    refs = set()
    for manifest in state_dir.glob("backups/*/*/manifest.json"):
        try:
            images = json.loads(manifest.read_text()).get("images") or []
        except (OSError, ValueError):
            continue
        refs.update(i["pinned_ref"] for i in images if isinstance(i, dict) and i.get("pinned_ref"))
    for ref in sorted(refs):
        subprocess.run(["docker", "image", "rm", ref], capture_output=True, timeout=60)


def teardown(demo: Path, root: Path) -> None:
    """Stop and remove the demo's own projects (with their volumes); never another's."""
    ours = recorded(demo)
    for name in PROJECTS:
        if name in ours and foreign(name, root, ours) is None:
            subprocess.run(["docker", "compose", "-p", name, "down", "--volumes", "--timeout", "5"],
                           capture_output=True, timeout=120)
