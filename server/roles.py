"""What a service is: a database (and of which kind), a one-shot job, a proxy, or an application.

One resolver for backups (what to dump), the deploy plan (strategy, data moves), the rollback
(which databases to restore) and diagnosis. It decides from, in this order:

1. ``x-dsm``: ``backup.dump`` hooks make a database; a declared ``role`` wins over the image;
   ``one-shot`` (or a dependant waiting for ``service_completed_successfully``) makes a job.
2. The service's ORIGINAL image reference. After a rollback a service runs our pin
   ``dsm-pin/<stack>-<service>:<id>``; the pin's original (recorded in ``compose.dsm.yaml``
   ``x-dsm-pins``, in the backup manifest, or still a tag of the same image) is what it is.
3. What the container runs (entrypoint + command, the service's over the image's, as Docker
   combines them): a postgres image running ``perl`` or ``sleep`` is an application (or a job),
   not a database; ``postgres``, ``docker-entrypoint.sh postgres`` or the image default is. A
   known server program (``postgres``, ``mysqld``, ``mongod``, ``redis-server``) run by any image
   is that database even when the image name says nothing.

Pure functions over plain values, so every caller (and the unit tests) asks the same questions;
:func:`role_of_container` and :func:`roles_for_stack` gather those values from the engine.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from server.xdsm import ServiceSettings

if TYPE_CHECKING:
    from server.engine import ContainerSummary, Engine
    from server.stackmodel import LoadedStack

RoleName = Literal["database", "one_shot", "proxy", "app"]
PIN_PREFIX = "dsm-pin/"


@dataclass(frozen=True)
class ServiceRole:
    role: RoleName
    kind: str | None
    """Database kind: postgres | mysql | mongo | redis | hooks (x-dsm backup.dump) | None (unknown)."""
    reason: str
    """One line on why, for plans, notes and reports."""
    known_kind: str | None = None
    """With x-dsm hooks (kind 'hooks'): the kind the service is without them (postgres ...), so the
    hooks dump records that kind's table row counts and the restore can be checked."""

    @property
    def is_database(self) -> bool:
        return self.role == "database"


# Database kinds by the repository's last path component (what the image IS).
_KIND_BY_IMAGE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(postgres|postgis|timescaledb(-ha)?|pgvector|pgvecto-rs|supabase-postgres|postgresql)$"),
     "postgres"),
    (re.compile(r"^(mysql|mariadb|percona(-server)?|mysql-server|alpine-mariadb)$"), "mysql"),
    (re.compile(r"^(mongo|mongodb(-community-server)?)$"), "mongo"),
    (re.compile(r"^(redis|valkey|redis-stack-server|redis-stack|keydb)$"), "redis"),
]
# The server program of each kind: what the container must run to be that database.
_SERVERS: dict[str, frozenset[str]] = {
    "postgres": frozenset({"postgres", "postmaster", "pg_ctl", "pg_ctlcluster"}),
    "mysql": frozenset({"mysqld", "mariadbd", "mysqld_safe", "mariadbd-safe"}),
    "mongo": frozenset({"mongod"}),
    "redis": frozenset({"redis-server", "valkey-server", "keydb-server", "redis-stack-server"}),
}
_KIND_OF_SERVER = {program: kind for kind, programs in _SERVERS.items() for program in programs}
_PROXIES = frozenset({"nginx", "nginx-unprivileged", "nginx-proxy-manager", "traefik", "caddy", "haproxy", "envoy",
                      "kong", "openresty", "varnish", "squid", "pgbouncer", "supavisor", "proxysql"})
_ENTRYPOINT_SCRIPTS = frozenset({"docker-entrypoint.sh", "docker-entrypoint", "entrypoint.sh",
                                 "docker-ensure-initdb.sh"})
_WRAPPERS = frozenset({"tini", "dumb-init", "gosu", "su-exec", "env", "exec", "nice", "catatonit"})
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "busybox"})


def repository_name(image: str) -> str:
    """'docker.io/library/postgres:15@sha256:..' -> 'postgres' (the last path component)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0].lower()


def is_pin(image: str | None) -> bool:
    return bool(image) and str(image).lower().startswith(PIN_PREFIX)


def kind_of_image(image: str | None) -> str | None:
    """The database kind an image reference names, or None (a pin names none: look its original up)."""
    if not image or is_pin(image) or image.startswith("sha256:"):
        return None
    repo = repository_name(image)
    for pattern, kind in _KIND_BY_IMAGE:
        if pattern.match(repo):
            return kind
    return None


def _argv(value: Any) -> list[str] | None:
    """An entrypoint/command as Compose or the engine gives it (list, string, or unset)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError:
            return value.split()
    return [str(v) for v in value]


def effective_argv(entrypoint: Any, command: Any, image_entrypoint: Any = None, image_cmd: Any = None
                   ) -> list[str] | None:
    """What the container execs, as Docker combines them: a service entrypoint drops the image's
    CMD; a service command replaces only the CMD. None when nothing is known."""
    ep, cmd = _argv(entrypoint), _argv(command)
    iep, icmd = _argv(image_entrypoint), _argv(image_cmd)
    if ep is not None:
        argv = ep + (cmd or [])
    elif cmd is not None:
        argv = (iep or []) + cmd
    elif iep is None and icmd is None:
        return None
    else:
        argv = (iep or []) + (icmd or [])
    return argv


def _programs(argv: list[str]) -> list[list[str]]:
    """The simple commands ``argv`` runs, wrappers and shells unwrapped (``sh -c 'a; exec b'`` -> a, b)."""
    words = list(argv)
    while words:
        head = words[0].rsplit("/", 1)[-1]
        if head in _ENTRYPOINT_SCRIPTS and len(words) > 1 and not words[1].startswith("-"):
            words = words[1:]  # the official entrypoints exec any program they are given
            continue
        if head in _WRAPPERS:
            words = words[1:]
            # gosu/su-exec take a user; env takes NAME=value pairs; tini and dumb-init take flags.
            while words and (words[0].startswith("-") or "=" in words[0]):
                words = words[1:]
            if head in ("gosu", "su-exec") and words:
                words = words[1:]
            continue
        if head in _SHELLS:
            if "-c" in words:
                script = words[words.index("-c") + 1] if words.index("-c") + 1 < len(words) else ""
                out: list[list[str]] = []
                for part in re.split(r"&&|\|\||[;&|\n]", script):
                    try:
                        sub = shlex.split(part)
                    except ValueError:
                        sub = part.split()
                    if sub:
                        out.extend(_programs(sub))
                return out
            rest = [w for w in words[1:] if not w.startswith("-")]
            return _programs(rest) if rest else [words]
        return [words]
    return []


def _runs_server(argv: list[str] | None, kind: str | None) -> tuple[bool | None, str]:
    """(runs the ``kind`` server?, what it runs). None: nothing known (the image default is assumed)."""
    if argv is None:
        return None, "the image's default command"
    shown = " ".join(argv)[:80]
    for words in _programs(argv):
        program = words[0].rsplit("/", 1)[-1]
        if program in _ENTRYPOINT_SCRIPTS:
            # Left alone or given only flags, the official entrypoints run the server.
            return kind is not None, shown
        if kind is not None and program in _SERVERS.get(kind, frozenset()):
            return True, shown
    return False, shown


def server_kind(argv: list[str] | None) -> str | None:
    """The database kind of a known server program ``argv`` runs, whatever the image is called."""
    for words in _programs(argv or []):
        program = words[0].rsplit("/", 1)[-1]
        if program in _KIND_OF_SERVER:
            return _KIND_OF_SERVER[program]
    return None


def resolve_role(
    settings: ServiceSettings,
    *,
    image: str | None,
    original: str | None = None,
    entrypoint: Any = None,
    command: Any = None,
    image_entrypoint: Any = None,
    image_cmd: Any = None,
    awaited_completion: bool = False,
    restart: str | None = None,
) -> ServiceRole:
    """The role of one service.

    ``image``: the reference it is configured with or runs (may be a pin); ``original``: the
    reference a pin stands for; ``entrypoint``/``command``: the service's (or the container's
    effective ones); ``image_entrypoint``/``image_cmd``: the image config's; ``awaited_completion``:
    another service depends on it with ``service_completed_successfully``."""
    if settings.backup.dump:
        plain = resolve_role(
            settings.model_copy(update={"backup": type(settings.backup)()}), image=image, original=original,
            entrypoint=entrypoint, command=command, image_entrypoint=image_entrypoint, image_cmd=image_cmd,
            awaited_completion=awaited_completion, restart=restart)
        return ServiceRole("database", "hooks", "x-dsm backup.dump hooks",
                           known_kind=plain.kind if plain.is_database else None)
    ref = original if original and not is_pin(original) else image
    named = kind_of_image(ref)
    argv = effective_argv(entrypoint, command, image_entrypoint, image_cmd)
    runs, shown = _runs_server(argv, named)
    kind = named if runs is not False else None
    if kind is None and named is None:
        kind = server_kind(argv)  # a server program in an image whose name says nothing (or a pin)
    pinned = f" (pinned {image}, originally {ref})" if is_pin(image) and ref != image else ""
    declared = settings.role
    if declared == "database":
        return ServiceRole("database", kind or named, f"x-dsm role: database{pinned}")
    if declared == "one-shot" or settings.one_shot:
        return ServiceRole("one_shot", None, "x-dsm one-shot")
    if declared == "proxy":
        return ServiceRole("proxy", None, "x-dsm role: proxy")
    if declared == "cache" and kind is not None:
        return ServiceRole("database", kind, f"x-dsm role: cache, running a {kind} server whose data is kept"
                           + pinned)
    if declared in ("web", "worker", "cache"):
        return ServiceRole("app", None, f"x-dsm role: {declared}")
    if awaited_completion and restart not in ("always", "unless-stopped"):
        return ServiceRole("one_shot", None, "a service waits for it to complete (service_completed_successfully)")
    if kind is not None:
        how = f"runs {shown}" if argv else "runs the image's default command"
        source = f"image {ref}" if named else "its command"
        return ServiceRole("database", kind, f"{kind} by {source}; {how}{pinned}")
    if named is not None:
        return ServiceRole("app", None, f"a {named} image running another program ({shown}): not a database")
    if ref and repository_name(ref) in _PROXIES:
        return ServiceRole("proxy", None, f"proxy image {repository_name(ref)}")
    if is_pin(ref):
        return ServiceRole("app", None, f"pinned image {ref} whose original reference is unknown")
    return ServiceRole("app", None, "an application (no database image, server or x-dsm role)")


# -- gathering the inputs ------------------------------------------------------------------------


def awaited(stack_services: Mapping[str, Any], service: str) -> bool:
    """Another service depends on ``service`` with ``condition: service_completed_successfully``."""
    for body in stack_services.values():
        cfg = ((body or {}).get("depends_on") or {})
        entry = cfg.get(service) if isinstance(cfg, dict) else None
        if isinstance(entry, dict) and entry.get("condition") == "service_completed_successfully":
            return True
    return False


def original_from_tags(attrs: Mapping[str, Any] | None) -> str | None:
    """A pin's original, read off the image itself: another tag (or digest) of the same image id."""
    attrs = attrs or {}
    for tag in attrs.get("RepoTags") or []:
        if not is_pin(tag):
            return str(tag)
    for digest in attrs.get("RepoDigests") or []:
        if not is_pin(digest):
            return str(digest)
    return None


def role_of_service(stack: LoadedStack, service: str, *, image_config: Mapping[str, Any] | None = None,
                    originals: Mapping[str, str] | None = None) -> ServiceRole:
    """The role of ``service`` as the files define it (``image_config``: the image's Config, when local)."""
    body = stack.services.get(service) or {}
    image = str(body.get("image") or "") or None
    config = image_config or {}
    return resolve_role(
        stack.service_settings_for(service),
        image=image,
        original=(originals or {}).get(service),
        entrypoint=body.get("entrypoint"),
        command=body.get("command"),
        image_entrypoint=config.get("Entrypoint"),
        image_cmd=config.get("Cmd"),
        awaited_completion=awaited(stack.services, service),
        restart=str(body.get("restart") or "") or None,
    )


async def roles_for_stack(engine: Engine, stack: LoadedStack, services: Iterable[str] | None = None
                          ) -> dict[str, ServiceRole]:
    """Every service's role as the files define it, with each local image's config read once."""
    originals = pin_originals(stack)
    configs: dict[str, Mapping[str, Any] | None] = {}
    out: dict[str, ServiceRole] = {}
    for name in services if services is not None else stack.services:
        ref = str((stack.services.get(name) or {}).get("image") or "")
        if ref and ref not in configs:
            attrs = await engine.image_attrs(ref)
            configs[ref] = (attrs or {}).get("Config") or None
            if is_pin(ref) and name not in originals:
                found = original_from_tags(attrs)
                if found:
                    originals[name] = found
        out[name] = role_of_service(stack, name, image_config=configs.get(ref), originals=originals)
    return out


async def role_of_container(engine: Engine, stack: LoadedStack, container: ContainerSummary,
                            originals: Mapping[str, str] | None = None) -> ServiceRole:
    """The role of what a container RUNS: its image reference (a pin resolved to its original) and
    its effective entrypoint and command, with the service's x-dsm settings from the files."""
    service = container.service or ""
    attrs = await engine.container_attrs(container.id) or {}
    config = attrs.get("Config") or {}
    image = str(config.get("Image") or container.image or "") or None
    original = (originals or {}).get(service) or pin_originals(stack).get(service)
    if is_pin(image) and not original:
        original = original_from_tags(await engine.image_attrs(container.image_id or str(image)))
    if not image or image.startswith("sha256:"):
        # The tag moved on since the container was created: the files name what it is.
        image = str((stack.services.get(service) or {}).get("image") or "") or image
    if not config:
        return role_of_service(stack, service, originals={service: original} if original else None)
    restart = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
    # The container's Config holds the effective entrypoint and command (image defaults included).
    return resolve_role(
        stack.service_settings_for(service),
        image=image,
        original=original,
        entrypoint=config.get("Entrypoint"),
        command=config.get("Cmd"),
        awaited_completion=awaited(stack.services, service),
        restart=str(restart or "") or None,
    )


def pin_originals(stack: LoadedStack) -> dict[str, str]:
    """``service -> original reference`` of the pins in the stack's compose.dsm.yaml."""
    if stack.directory is None:
        return {}
    from server.deploy.override import pin_originals as read

    return read(stack.directory)


__all__ = ["PIN_PREFIX", "RoleName", "ServiceRole", "effective_argv", "is_pin", "kind_of_image",
           "original_from_tags", "pin_originals", "repository_name", "resolve_role", "role_of_container",
           "role_of_service", "roles_for_stack", "server_kind"]
