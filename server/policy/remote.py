"""What Compose reads on the client side, flagged when the engine is remote (issue 19).

Compose runs where this server runs, but the containers run on the engine. With an engine on
another machine (an ssh:// or tcp:// target, a context, a VM), a bind mount's source and a
``configs``/``secrets`` file refer to a path on the *engine's* disk, whatever exists here; a
build context is read here and uploaded to the engine at each build. Only checked when host
facts say the engine is not on this machine (server/preflight/facts.py measures that through
the engine, never assumes it).
"""

from __future__ import annotations

from collections.abc import Iterator

from server.models import Finding
from server.policy.catalog import finding
from server.policy.context import LintContext

_RULE = "remote-client-files"


def remote_client_files(ctx: LintContext) -> Iterator[Finding]:
    if ctx.facts is None or ctx.facts.engine_local:
        return
    for name, svc in sorted(ctx.services.items()):
        binds = [f"{m.get('source')} -> {m.get('target')}" for m in svc.get("volumes") or []
                 if isinstance(m, dict) and m.get("type") == "bind" and m.get("source")]
        if binds:
            yield finding(
                _RULE,
                "bind mount on a remote engine: the source is a path on the engine's machine, not on the machine "
                "running this server (Docker creates an empty directory there when it is missing)",
                service=name, line=ctx.stack.line_of(name, "volumes"), evidence=binds[:10],
                fix="put the files at the same path on the engine's host, or use a named volume and copy the data "
                "into it; or run the server on the Docker host (ssh host docker-stack-mcp)",
            )
        build = svc.get("build")
        context = build.get("context") if isinstance(build, dict) else build if isinstance(build, str) else None
        if context and str(context).startswith("/"):
            yield finding(
                _RULE,
                f"build on a remote engine: the context {context} is read here and uploaded to the engine at each "
                "build (slow over ssh, and the image exists only on that engine)",
                service=name, line=ctx.stack.line_of(name, "build"), evidence=[str(context)],
                fix="build and push the image elsewhere (CI, a registry) and reference it by tag, or build on the "
                "engine's host",
            )
    for kind in ("configs", "secrets"):
        declared = ctx.stack.rendered.get(kind) or {}
        files = [f"{key}: {spec.get('file')}" for key, spec in sorted(declared.items())
                 if isinstance(spec, dict) and spec.get("file")] if isinstance(declared, dict) else []
        if files:
            yield finding(
                _RULE,
                f"{kind} from files on a remote engine: Compose bind-mounts each file by its path, which is a path "
                "on the engine's machine, not this one",
                evidence=files[:10],
                fix=f"copy the files to the same paths on the engine's host, or give the {kind[:-1]} inline "
                "(configs: content:, secrets: environment:)",
            )


RULES = [remote_client_files]
