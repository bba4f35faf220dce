"""diagnose_stack: the operator's troubleshooting pass over a running stack, as findings.

Checks, per service: state and exit code, OOM kills (with the limit, and the peak the watcher
sampled), restart loops, health-check output, error lines in the logs (fingerprinted, so the
memory finds the same failure however it was worded), connectivity to each dependency from
inside the stack's networks, resource pressure, port conflicts, and what changed since the
last recorded deployment. Every finding carries evidence, a fix and a likely cause; a healthy
service gets no error finding.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

import anyio

from server.errors import DsmError, StackNotFound
from server.memory.fingerprint import line_signatures
from server.models import SEVERITY_ORDER, Severity
from server.monitor import drift, driftfindings, netcheck, since, watchstate
from server.monitor.connectivity import check_connectivity
from server.monitor.logs import recent_lines, stack_scrubber
from server.monitor.models import Diagnosis, DiagnosisFinding, SimilarIncident
from server.monitor.resolve import StackRef, resolve_stack
from server.monitor.stackpolicy import StackPolicy, stack_policy
from server.monitor.status import Observed, observe, sample_usage
from server.redact import Scrubber
from server.runtime import Runtime

log = logging.getLogger("docker_stack_mcp.monitor")

LOG_TAIL = 200
RESTART_LOOP = 3
AFTER_ACT = "began-after-deploy"
PRESSURE = 0.90
ERROR_LINE = re.compile(
    r"\b(error|fatal|panic|exception|traceback|critical|refused|denied|unreachable|timed? ?out|"
    r"cannot|could not|failed|oom|killed)\b", re.IGNORECASE)
DB_CONNECTION = re.compile(
    r"(connection refused|could not connect to (?:server|database)|ECONNREFUSED|too many connections|"
    r"connection (?:reset|terminated)|no pg_hba\.conf entry|password authentication failed|"
    r"can't connect to (?:local )?mysql|getaddrinfo (?:ENOTFOUND|EAI_AGAIN)|dial tcp .* connect:)",
    re.IGNORECASE)


class _Collector:
    def __init__(self, scrub: Scrubber) -> None:
        self.items: list[DiagnosisFinding] = []
        self.scrub = scrub

    def add(self, rule: str, severity: Severity, category: str, service: str | None, message: str,
            likely_cause: str, fix: str | None = None, evidence: list[str] | None = None) -> None:
        self.items.append(DiagnosisFinding(
            rule=rule, severity=severity, category=category, service=service, message=self.scrub(message),
            fix=fix, evidence=[self.scrub(e)[:500] for e in (evidence or [])][:10], likely_cause=likely_cause))


async def diagnose_stack(runtime: Runtime, stack: str, service: str | None = None) -> Diagnosis:
    ref = resolve_stack(runtime.settings, stack)
    observed = await observe(runtime, ref.name)
    if not observed:
        from server.monitor.swarm_status import swarm_diagnosis

        swarm = await swarm_diagnosis(runtime, ref.name, service)  # a swarm stack: its tasks, by node
        if swarm is not None:
            return swarm
    if service is not None and not any(o.service == service for o in observed):
        raise StackNotFound(f"stack {ref.name!r} has no container of service {service!r}",
                            next_step="call stack_status to see its services")
    if not observed:
        raise StackNotFound(f"no containers of stack {ref.name!r} on the engine",
                            state="the stack is not deployed", next_step="call list_stacks")
    scrub = stack_scrubber(ref, observed, runtime.settings)
    out = _Collector(scrub)
    in_scope = [o for o in observed if service is None or o.service == service]
    state = watchstate.load(runtime.settings)
    logs: dict[str, list[str]] = {}

    async def read(o: Observed) -> None:
        try:
            logs[o.summary.id] = await recent_lines(runtime, o, LOG_TAIL)
        except DsmError:
            logs[o.summary.id] = []

    async with anyio.create_task_group() as tg:
        for o in in_scope:
            tg.start_soon(read, o)
    policy = stack_policy(ref.location, {o.service: o.labels for o in observed})
    model = await drift.model_of(runtime, ref)
    one_shots = _one_shots(observed, model, policy)
    for o in in_scope:
        _check_container(out, o, logs.get(o.summary.id, []), watchstate.service_view(state, ref.name, o.service),
                         one_shot=o.service in one_shots)
    await check_connectivity(runtime, out.add, ref, observed, service, one_shots, model)
    since_deploy = await driftfindings.recorded(runtime, ref, observed)  # issue 18: behind our back
    model_drift = await drift.compare(runtime, ref, model, observed, one_shots, only=service) \
        if model is not None else []
    for d in model_drift:
        cause = driftfindings.cause_for(since_deploy, d.service, d.rule, d.likely_cause)
        out.add(d.rule, d.severity, "drift", d.service, d.message, likely_cause=cause, fix=d.fix,
                evidence=[*d.evidence, *driftfindings.evidence_for(since_deploy, d.service, d.rule)])
    if ref.location is not None:
        driftfindings.add_findings(out.add, since_deploy, {(d.service, d.rule) for d in model_drift}, service,
                                   lambda name: drift.deploy_call(runtime, ref, name))
    await _check_pressure(runtime, out, in_scope)
    # The journal's images only when no baseline was compared (deployments from before it was kept).
    compared = since_deploy is not None and since_deploy.deployment is not None and not since_deploy.note
    await _check_changes(runtime, out, ref, in_scope, images_wanted=not compared)
    await _check_after_act(runtime, out, ref, in_scope)
    # Errors tied to the deploy or rollback after which they began rank first: the likeliest cause.
    findings = sorted(out.items, key=lambda f: (SEVERITY_ORDER[f.severity], f.rule != AFTER_ACT, f.service or "",
                                                f.rule))
    similar = await _similar(runtime, ref.name, service, findings, logs)
    return Diagnosis(stack=ref.name, healthy=not any(f.severity == "error" for f in findings),
                     findings=findings, similar_incidents=similar, next_steps=_next_steps(findings, similar),
                     drift=driftfindings.summary(since_deploy))


def _check_container(out: _Collector, o: Observed, lines: list[str], seen: dict[str, Any] | None,
                     one_shot: bool = False) -> None:
    st, svc = o.state, o.service
    status = st.get("Status") or o.summary.state
    limit = o.memory_limit
    noise = [line for line in lines if since.is_restore_noise(line)]
    errors = [line for line in lines if ERROR_LINE.search(line) and not since.is_restore_noise(line)]
    tail = errors[-5:] or lines[-5:]
    if noise:
        out.add("restore-noise", "info", "logs", svc,
                f"{svc} logged {len(noise)} error lines a database restore itself produces (not counted as errors)",
                likely_cause="a pg_dumpall --clean dump replayed into the running server drops and recreates "
                "roles and databases that exist: these errors are expected", evidence=noise[-3:])
    if st.get("OOMKilled") or (status == "exited" and st.get("ExitCode") == 137 and limit):
        peak = (seen or {}).get("peak_memory_bytes")
        out.add("oom-killed", "error", "resources", svc,
                f"{svc} was killed by the kernel for running out of memory (limit "
                f"{_mib(limit) if limit else 'none'}{', peak seen ' + _mib(peak) if peak else ''})",
                likely_cause="the service needs more memory than its limit allows, or it leaks",
                fix=f"raise deploy.resources.limits.memory above {_mib(limit)} or find the leak" if limit
                else "set a memory limit so one service cannot starve the host",
                evidence=[f"OOMKilled={st.get('OOMKilled')}, exit code {st.get('ExitCode')}",
                          f"memory limit {limit or 'unlimited'} bytes", *([f"peak {peak} bytes"] if peak else []),
                          *tail])
    elif status in ("exited", "dead") and st.get("ExitCode", 0) != 0:
        out.add("exited", "error", "state", svc, f"{svc} exited with code {st.get('ExitCode')}",
                likely_cause=_exit_cause(int(st.get("ExitCode") or 0), errors),
                fix="read the last log lines, fix the cause, then stack_control start",
                evidence=[f"finished at {st.get('FinishedAt')}",
                          *(["error: " + st["Error"]] if st.get("Error") else []), *tail])
    elif status in ("exited", "created") and not one_shot and st.get("ExitCode", 0) == 0 and status == "exited":
        out.add("stopped", "warning", "state", svc, f"{svc} is stopped (exit code 0)",
                likely_cause="stopped by a person or finished its work", fix="stack_control start if it should run")
    engine_error = str(st.get("Error") or "")
    if "port is already allocated" in engine_error or "address already in use" in engine_error:
        out.add("port-conflict", "error", "network", svc, f"{svc} could not bind its host port",
                likely_cause="another container or process already uses the published port",
                fix="free the port or publish the service on another host port", evidence=[str(st.get("Error"))])
    restarts = int(o.inspect.get("RestartCount") or 0)
    watched = len((seen or {}).get("attempts") or [])
    if seen and (seen.get("exhausted") or watched >= 2):
        out.add("watcher-gave-up" if seen.get("exhausted") else "repeated-recovery",
                "error" if seen.get("exhausted") else "warning", "state", svc,
                f"the watcher restarted {svc} {watched} times in its window"
                + (" and stopped trying" if seen.get("exhausted") else ""),
                likely_cause="the failure comes back after every restart: a restart does not fix its cause",
                fix="find the cause in the evidence and the logs; the watcher resumes after its window",
                evidence=[f"last watcher action: {seen.get('action')} at {seen.get('action_at')} "
                          f"({seen.get('outcome')})", *tail[-3:]])
    if status == "restarting" or restarts >= RESTART_LOOP:
        out.add("restart-loop", "error" if status == "restarting" else "warning", "state", svc,
                f"{svc} has restarted {restarts} times ({status})",
                likely_cause="the process crashes soon after start: " + (_exit_cause(int(st.get("ExitCode") or 0),
                                                                                       errors)),
                fix="look at the error lines; a restart will not fix a crash on start", evidence=tail)
    # An exited container keeps its last health status: only a running one is judged by it.
    health = (st.get("Health") or {}) if status == "running" else {}
    if health.get("Status") == "unhealthy":
        probes = [f"healthcheck exit {h.get('ExitCode')}: {str(h.get('Output') or '').strip()[:200] or '(no output)'}"
                  for h in (health.get("Log") or [])[-5:] if h.get("ExitCode") != 0][-3:]
        out.add("unhealthy", "error", "health", svc,
                f"{svc} fails its healthcheck ({health.get('FailingStreak')} failures in a row)",
                likely_cause="the service is up but does not answer its health check: hung, overloaded, "
                "misconfigured or waiting on a dependency",
                fix="restart it (stack_control restart); if it recurs, fix the cause shown in the evidence",
                evidence=probes + tail)
    if errors and status == "running" and health.get("Status") != "unhealthy":
        sigs = line_signatures(errors)
        # Fingerprints group the same failure logged with other timestamps, ids and addresses.
        counts = Counter(sig for line in errors for sig in line_signatures([line]))
        top = [f"{counts[sig]}x signature {sig}: {sigs[sig][:160]}" for sig, _ in counts.most_common(3) if sig in sigs]
        db = [line for line in errors if DB_CONNECTION.search(line)]
        out.add("database-connection" if db else "log-errors", "warning", "logs", svc,
                f"{svc} logged {len(errors)} error lines in its last {LOG_TAIL} ({len(sigs)} distinct)",
                likely_cause="a dependency (database, API) refuses connections" if db
                else "the application reports errors while still running",
                fix="search_past_incidents with one of these lines", evidence=[*(db or errors)[-3:], *top])


def _one_shots(observed: list[Observed], model: dict[str, Any] | None, policy: StackPolicy) -> set[str]:
    """One-shot jobs: x-dsm, or awaited with service_completed_successfully (server.roles)."""
    from server.roles import awaited

    jobs = {o.service for o in observed if policy.service(o.service).is_one_shot}
    jobs |= {d for o in observed for d in netcheck.completion_dependencies(o)}
    services = (model or {}).get("services") or {}
    return jobs | {name for name in services if awaited(services, name)
                   and ((services[name] or {}).get("restart") not in ("always", "unless-stopped"))}


async def _check_after_act(runtime: Runtime, out: _Collector, ref: StackRef, observed: list[Observed]) -> None:
    """Problems that began after the newest deploy or rollback name it (and rank first)."""
    act = since.last_act(runtime, ref.name)
    problems = [f for f in out.items if f.severity in ("error", "warning") and f.service
                and f.category in ("state", "health", "logs", "resources", "network")]
    if act is None or not problems:
        return
    by_service = {o.service: o for o in observed}
    after: list[str] = []
    for name in sorted({f.service for f in problems if f.service}):
        o = by_service.get(name)
        if o is None:
            continue
        if since.began_after(act, o.state.get("StartedAt")):
            after.append(name)
            continue
        try:  # a container the act left alone: did its errors start after it?
            lines = await recent_lines(runtime, o, LOG_TAIL, since=act.started_epoch)
        except DsmError:
            continue
        if any(ERROR_LINE.search(ln) and not since.is_restore_noise(ln) for ln in lines):
            after.append(name)
    if not after:
        return
    worst = min((f.severity for f in problems if f.service in after), key=lambda s: SEVERITY_ORDER[s])
    rollback = act.kind == "rollback"
    out.add(AFTER_ACT, worst, "changes", None,
            f"the problems of {', '.join(after)} began after {act.named()}",
            likely_cause=f"the {act.kind} {act.operation_id} changed what these services run or depend on",
            fix=("do not roll back again (that goes one release further back): fix the cause in the evidence"
                 if rollback else f"rollback(stack={ref.name!r}) returns to the release before it; "
                 "stack_history shows what changed"),
            evidence=[f"{act.kind} {act.operation_id} ended {act.ended_at}", *act.changed[:6],
                      *[f"{f.service}: {f.message}" for f in problems if f.service in after][:4]])


def _exit_cause(code: int, errors: list[str]) -> str:
    if code == 137:
        return "killed (SIGKILL): out of memory or stopped forcibly"
    if code == 143:
        return "terminated (SIGTERM)"
    if code in (126, 127):
        return "the command cannot be executed or is missing from the image"
    if errors:
        return "the application failed: " + errors[-1][:160]
    return "the application exited with an error"


async def _check_pressure(runtime: Runtime, out: _Collector, observed: list[Observed]) -> None:
    try:
        usage = await sample_usage(runtime, observed)
    except DsmError:
        return
    for o in observed:
        u = usage.get(o.summary.id)
        limit = o.memory_limit
        if u and u.memory_bytes and limit and u.memory_bytes >= PRESSURE * limit:
            out.add("memory-pressure", "warning", "resources", o.service,
                    f"{o.service} uses {u.memory_bytes * 100 // limit}% of its memory limit",
                    likely_cause="the limit is too tight for the workload, or memory leaks",
                    fix=f"raise the memory limit above {_mib(limit)}",
                    evidence=[f"memory {u.memory_bytes} of {limit} bytes"])
        if u and u.cpu_percent and u.cpu_percent > 95:
            out.add("cpu-pressure", "warning", "resources", o.service, f"{o.service} uses {u.cpu_percent}% CPU",
                    likely_cause="busy loop or load beyond the CPU limit", fix="check load; raise cpus or scale out",
                    evidence=[f"cpu {u.cpu_percent}%"])
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            meminfo = dict(line.split(":", 1) for line in fh.read().splitlines())
        total = int(meminfo["MemTotal"].split()[0])
        available = int(meminfo["MemAvailable"].split()[0])
    except (OSError, KeyError, ValueError):
        return
    if runtime.engine().endpoint_url().startswith("unix://") and available < 0.05 * total:
        out.add("host-pressure", "warning", "resources", None,
                f"the host has only {available * 100 // total}% of its memory available",
                likely_cause="the host is overcommitted", fix="stop something or add memory",
                evidence=[f"MemAvailable {available} kB of {total} kB"])


async def _check_changes(runtime: Runtime, out: _Collector, ref: StackRef, observed: list[Observed],
                         images_wanted: bool = True) -> None:
    """What differs from the last deployment recorded in the journal (images) and the files now."""
    try:
        from server.monitor.opsbridge import last_deployment

        record = last_deployment(runtime, ref.name)
    except Exception as exc:  # the journal is optional for diagnosis
        log.debug("no journal for %s: %s", ref.name, exc)
        record = None
    images = _deployed_images(record) if images_wanted else {}
    for o in observed:
        want = images.get(o.service)
        running_id = str(o.inspect.get("Image") or "")
        if want and want not in (running_id, (o.inspect.get("Config") or {}).get("Image")) and not any(
                want in d for d in _repo_digests(o)):
            out.add("changed-since-deploy", "warning", "changes", o.service,
                    f"{o.service} runs another image than the last recorded deployment",
                    likely_cause="the service was changed outside deploy_stack (by hand or another tool)",
                    fix="redeploy with deploy_stack, or rollback",
                    evidence=[f"deployed: {want}", f"running: {(o.inspect.get('Config') or {}).get('Image')}"])
    if ref.location is None:
        return
    try:
        hashes = await _config_hashes(runtime, ref)
    except DsmError as exc:
        log.debug("config hash of %s unavailable: %s", ref.name, exc)
        return
    for o in observed:
        now = hashes.get(o.service)
        was = o.labels.get("com.docker.compose.config-hash")
        if now and was and now != was:
            out.add("config-changed", "info", "changes", o.service,
                    f"{o.service}'s compose configuration (image, env or config) changed since its container "
                    "was created", likely_cause="the files were edited and not deployed yet",
                    fix="review the change with inspect_stack, then deploy_stack",
                    evidence=[f"container hash {was[:12]}, files now {now[:12]}"])


def _deployed_images(record: Any) -> dict[str, str]:
    """Service -> image id (or digest, or reference) as the journal recorded the deployment.

    deploy_stack's result carries ``image_ids`` {service: id} and ``services`` [{name, image,
    image_digest}]; the spec's ``images`` [{service, digest|image_id|image}] is read too.
    """
    result = getattr(record, "result", None) or {}
    images: dict[str, str] = {}
    for item in result.get("images") or []:
        if isinstance(item, dict) and item.get("service"):
            ref = item.get("image_id") or item.get("digest") or item.get("image")
            if ref:
                images[str(item["service"])] = str(ref)
    for item in result.get("services") or []:
        if isinstance(item, dict) and item.get("name") and (item.get("image_digest") or item.get("image")):
            images[str(item["name"])] = str(item.get("image_digest") or item.get("image"))
    for service, image_id in (result.get("image_ids") or {}).items():
        if image_id:
            images[str(service)] = str(image_id)
    return images


def _repo_digests(o: Observed) -> list[str]:
    return [str(d) for d in (o.inspect.get("RepoDigests") or [])]


async def _config_hashes(runtime: Runtime, ref: StackRef) -> dict[str, str]:
    assert ref.location is not None
    result = await runtime.compose().run_project(ref.location.project().named(ref.name), ["config", "--hash", "*"],
                                                 timeout_s=30, what="docker compose config --hash")
    hashes = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            hashes[parts[0]] = parts[1]
    return hashes


async def _similar(runtime: Runtime, stack: str, service: str | None, findings: list[DiagnosisFinding],
                   logs: dict[str, list[str]]) -> list[SimilarIncident]:
    problems = [f for f in findings if f.severity in ("error", "warning")]
    if not problems:
        return []
    query = "\n".join([f.message for f in problems[:3]] + [e for f in problems[:3] for e in f.evidence[-2:]])[:1500]

    def search() -> list[SimilarIncident]:
        from server.memory.incidents import SIMILAR_FLOOR

        memory = runtime.memory()
        # Offered unasked: only what is close in absolute terms (or shares an error signature).
        hits = memory.search_incidents(query, stack=stack, service=service, limit=3,
                                       min_relevance=SIMILAR_FLOOR).results
        if not hits:  # the same failure on another stack is still worth knowing
            hits = memory.search_incidents(query, limit=3, min_relevance=SIMILAR_FLOOR).results
        return [SimilarIncident(incident_id=h.incident_id, title=h.title, stack=h.stack, root_cause=h.root_cause,
                                resolution=h.resolution, score=h.relevance if h.relevance is not None else h.score)
                for h in hits]

    try:
        return await anyio.to_thread.run_sync(search)
    except Exception as exc:  # the memory is advice; its failure must not hide the diagnosis
        log.info("similar incidents unavailable: %s", exc)
        return []


def _next_steps(findings: list[DiagnosisFinding], similar: list[SimilarIncident]) -> list[str]:
    steps: list[str] = []
    if similar and similar[0].resolution:
        steps.append(f"compare with the most similar past incident ({similar[0].title!r}): if its symptoms match, "
                     "its resolution may apply")
    rules = {f.rule for f in findings}
    if "oom-killed" in rules:
        steps.append("raise the memory limit (inspect_stack shows it), validate_compose, then deploy_stack")
    if AFTER_ACT in rules:
        first = next(f for f in findings if f.rule == AFTER_ACT)
        steps.append(f"the problems began after a deployment: {first.fix}")
    if rules & {"network-detached", "container-missing", "image-drift"}:
        steps.append("the running stack differs from its files: the drift findings name the deploy_stack call "
                     "that repairs each (deploy_stack dry_run shows it as a change)")
    file_fault = [f for f in findings if f.rule == "dependency-unreachable" and "compose file" in (f.fix or "")]
    if file_fault:
        steps.append("fix the networks in the compose file so each service shares one with its dependencies")
    if rules & {"unhealthy", "exited", "restart-loop"}:
        steps.append("stack_logs for the failing service, then stack_control restart once; if it fails again, "
                     "fix the cause or rollback")
    if driftfindings.RULE in rules:
        steps.append("the stack was changed outside the server since its last deployment (drift-since-deploy): "
                     "find out who changed it before deploying over it")
    if "changed-since-deploy" in rules or "config-changed" in rules:
        steps.append("compare with stack_history; rollback if the change broke the stack")
    if any(f.severity == "error" for f in findings):
        steps.append("record_incident with the root cause and resolution once fixed")
    return steps or ["nothing to do: no problems found"]


def _mib(value: int | None) -> str:
    return f"{(value or 0) / 1048576:.0f} MiB"
