"""stack_history in human terms (issue 17): per deployment the image reference and digest of each
service and what changed against the deployment before: services recreated, images, env keys by
name (never values), one-shots run. Data from two real deploys; the unit tests cover a rollback
and a deployment whose files were not kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.operations import Operations
from server.operations.changes import changes_of
from server.runtime import Runtime
from server.settings import Settings
from tests.deploy_helpers import WEB_10, WEB_11, deploy, web_service, write

pytestmark = pytest.mark.anyio

SECRET_1, SECRET_2 = "hunter2-first-secret", "hunter2-second-secret"


def stack(name: str, web_image: str) -> str:
    job = ("  job:\n    image: dsm-test/web:1.0\n    entrypoint: ['true']\n    restart: 'no'\n    mem_limit: 32m\n"
           "    cpus: 0.5\n    labels: {dsm.test: '1'}\n    x-dsm: {one-shot: true}\n")
    env = '    environment:\n      V: "${APP_VERSION}"\n'
    return f"name: {name}\nx-dsm: {{verify_s: 0}}\nservices:\n" + web_service("web", web_image, extra=env) + job


@pytest.mark.docker
async def test_history_says_what_each_deployment_changed(runtime: Runtime, settings: Settings, stacks_root: Path,
                                                         project_name: str) -> None:
    from mcp import Client

    from server.app import build_server

    write(stacks_root, project_name, stack(project_name, WEB_10), env=f"APP_VERSION=1\nDB_PASSWORD={SECRET_1}\n")
    first = await deploy(runtime, project_name)
    assert first.status == "deployed", first.phases
    write(stacks_root, project_name, stack(project_name, WEB_11),
          env=f"APP_VERSION=2\nDB_PASSWORD={SECRET_2}\nNEW_FLAG=1\n")
    second = await deploy(runtime, project_name)
    assert second.status == "deployed", second.phases
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("stack_history", {"stack": project_name})
    assert not result.is_error, result.content
    history: dict[str, Any] = result.structured_content
    newest, oldest = history["deployments"]
    assert [newest["deployment_id"], oldest["deployment_id"]] == [second.deployment_id, first.deployment_id]

    images = {i["service"]: i for i in newest["images"]}
    assert images["web"]["image"] == WEB_11 and "@sha256:" in images["web"]["digest"]
    assert images["job"]["image"] == WEB_10 and "@sha256:" in images["job"]["digest"]
    assert newest["changes"] == {"recreated": ["web"], "removed": [], "images": ["web"],
                                 "env_keys": ["APP_VERSION", "DB_PASSWORD", "NEW_FLAG"], "one_shots_run": []}
    # The first deployment created everything; the one-shot ran to completion.
    assert oldest["changes"]["recreated"] == ["job", "web"] and oldest["changes"]["one_shots_run"] == ["job"]
    assert oldest["changes"]["env_keys"] == ["APP_VERSION", "DB_PASSWORD", "web.V"]
    # Names, never values: no secret in what the model reads or in the structured content.
    text = result.content[0].text + json.dumps(history)
    assert SECRET_1 not in text and SECRET_2 not in text and "hunter2" not in text


def _record(ops: Operations, stack: str, kind: str, status: str, images: dict[str, str],
            up: str | None = None, env_names: tuple[str, ...] = ()) -> str:
    run = ops.begin(stack, kind, {"path": stack, "env": list(env_names)})  # type: ignore[arg-type]
    if up is not None:
        run.phase("up", "ok", up, 1.0)
    services = [{"name": s, "state": "running", "image": i, "image_digest": f"r/{s}@sha256:{i[-1]}"}
                for s, i in images.items()]
    run.end(status, {"services": services})  # type: ignore[arg-type]
    return run.id


def test_a_rollback_without_an_up_plan_and_files_not_kept(settings: Settings) -> None:
    ops = Operations(settings)
    a = _record(ops, "shop", "deploy", "deployed", {"web": "web:1", "db": "pg:1"}, up="web create, db create")
    b = _record(ops, "shop", "deploy", "rolled_back", {"web": "web:1", "db": "pg:1"}, up="web recreate",
                env_names=("API_TOKEN",))
    c = _record(ops, "shop", "rollback", "deployed", {"web": "web:0", "db": "pg:1"})
    changes = changes_of(settings, ops.history("shop"))
    # A rollback names the services whose image it changed against the last good deployment.
    assert changes[c].recreated == ["web"] and changes[c].images == ["web"]
    # A failed attempt: what it recreated; no one-shot counted; the env argument by name.
    assert changes[b].recreated == ["web"] and changes[b].one_shots_run == [] and changes[b].env_keys == ["API_TOKEN"]
    # No kept files (not a real deploy): env keys unknown, said as null, not as "none changed".
    assert changes[a].env_keys is None and changes[a].recreated == ["db", "web"]


def _keep(settings: Settings, stack: str, op_id: str, files: dict[str, str] | None) -> None:
    """The deployment's kept files as server/deploy/snapshots.py writes them; None: only the drift
    baseline, as a failed deploy's rollback records it under the failed id."""
    directory = settings.state_dir / "deployments" / stack / op_id
    directory.mkdir(parents=True)
    (directory / "BASELINE.json").write_text("{}")
    if files is not None:
        for name, text in files.items():
            (directory / name).write_text(text)
        (directory / "FILES").write_text("".join(f"{n}\n" for n in files))


def test_a_failed_deploy_lists_no_spurious_env_keys_and_each_service_once(settings: Settings) -> None:
    from server.operations.views import images_of

    ops = Operations(settings)
    compose = "services:\n  proxy:\n    environment: {PROXY_BACKEND: 'app:80'}\n  app: {}\n"
    a = _record(ops, "shop", "deploy", "deployed", {"app": "app:1", "proxy": "proxy:1"}, up="app create")
    _keep(settings, "shop", a, {"compose.yaml": compose, "override.yaml": compose.replace("app:80", "app:81")})
    b = _record(ops, "shop", "deploy", "rolled_back", {"app": "app:1", "proxy": "proxy:1"}, up="app recreate")
    _keep(settings, "shop", b, None)
    c = _record(ops, "shop", "deploy", "deployed", {"app": "app:2", "proxy": "proxy:1"}, up="app recreate")
    _keep(settings, "shop", c, {"compose.yaml": compose, "override.yaml": compose.replace("app:80", "app:81")})
    changes = changes_of(settings, ops.history("shop"))
    # The failed deploy's files were not kept: unknown (null), not "every variable removed".
    assert changes[b].env_keys is None, changes[b]
    # Same files: nothing changed (the later file of the merge order is the one compared).
    assert changes[c].env_keys == [], changes[c]
    # A service with two containers running one image is one entry.
    rows = [{"name": "app", "image": "app:2", "image_digest": "r/app@sha256:2"}] * 2 + [
        {"name": "proxy", "image": "proxy:1", "image_digest": "r/proxy@sha256:1"}]
    assert [i.service for i in images_of({"services": rows})] == ["app", "proxy"]
