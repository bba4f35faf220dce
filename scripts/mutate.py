"""`make mutate`: mutation testing of the safety modules, each against its own fast tests.

For every module in MODULES, mutmut (3.x) plants small bugs one at a time (a flipped operator,
a changed constant, a dropped call...) and runs only the tests listed for that module. A mutant
that no test notices "survives". Each module runs in its own scratch copy of the project under
.cache/mutation/work/<slug>, so the per-module test selection is mutmut's own configuration and
runs never share state. Survivors that are equivalent (no behaviour a user could see changes)
are listed, with the reason, in tests/mutation/equivalent.md and left out of the score.

Writes .cache/mutation/report.md (score per module, survivors with their diff) and
.cache/mutation/report.json. Usage:

    python scripts/mutate.py [--jobs N] [--only yamlsafe,process] [--report PATH]

Exit status 0 whether or not mutants survive (the report is the output); 2 on a broken run.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "mutation"
EQUIVALENT = REPO / "tests" / "mutation" / "equivalent.md"
COPY = ("server", "tools", "prompts", "tests")
# Each run is bounded: a mutant that makes a test hang is a timeout (counted as killed by mutmut,
# since the user would notice), never a stuck `make mutate`.
PYTEST_ARGS = ["-p", "no:cacheprovider", "--timeout=60", "-m", "not docker and not slow", "-q"]

KILLED = ("killed", "timeout", "caught by type check", "segfault")
# Lines that only carry prose for a human (an error's "state"/"next step" hint, a log call):
# mutating their text tests nothing a user relies on, so they are not mutated at all.
PROSE_LINES = [r"^\s*(state|next_step)=\S", r"^\s*log\.(debug|info|warning|error)\("]


@dataclass(frozen=True)
class Module:
    slug: str
    path: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = field(default=())
    """Globs of mutant names to run (default: every function of the module)."""
    baseline: tuple[str, ...] = field(default=())
    """Tests to use when none of ``tests`` exist (measuring a tree from before they were written)."""


MODULES: tuple[Module, ...] = (
    Module("redact", "server/redact.py",
           ("tests/test_redact.py", "tests/test_redact_promises.py",
            "tests/test_memory_units.py::test_secrets_are_masked",
            "tests/test_memory_units.py::test_masking_keeps_ordinary_text")),
    Module("yamlsafe", "server/yamlsafe.py", ("tests/test_yamlsafe.py", "tests/test_yamlsafe_limits.py")),
    Module("stacks", "server/stacks.py", ("tests/test_stacks_paths.py", "tests/test_stacks_confinement.py")),
    # The loader's path confinement: every file a compose document makes Compose read (env_file,
    # include at any depth and each included project's .env, extends, secrets/configs files) must
    # resolve inside the stacks root, remote includes are refused, cycles and depth are bounded.
    Module("sources", "server/sources.py", ("tests/test_stackload_paths.py", "tests/test_sources_promises.py"),
           baseline=("tests/test_stackload_paths.py",)),
    # ... and the files COMPOSE_FILE names (read from .env or the given env) before Compose runs.
    Module("stackload", "server/stackload.py", ("tests/test_stackload_paths.py", "tests/test_sources_promises.py"),
           baseline=("tests/test_stackload_paths.py",),
           functions=("*x__check_inside__*", "*x__compose_file_origin__*", "*x__screen_file__*")),
    Module("process", "server/process.py", ("tests/test_process.py", "tests/test_process_group.py",
                                            "tests/test_children_reaped.py::test_a_missing_program_is_still_file_not_found",
                                            "tests/test_children_reaped.py::test_children_are_registered_while_they_run",
                                            "tests/test_children_reaped.py::test_every_child_is_started_with_the_parent_death_signal")),
    Module("ports", "server/preflight/ports.py", ("tests/test_ports.py", "tests/test_preflight_units.py")),
    Module("security", "server/policy/security.py", ("tests/test_security_rules.py", "tests/test_policy_units.py"),
           baseline=("tests/test_policy_rules.py", "tests/test_policy_units.py")),
    Module("secrets", "server/policy/secrets.py", ("tests/test_security_rules.py", "tests/test_policy_units.py"),
           baseline=("tests/test_policy_rules.py", "tests/test_policy_units.py")),
    Module("waivers", "server/policy/waivers.py", ("tests/test_policy_units.py", "tests/test_waivers.py")),
    Module("settings", "server/settings.py", ("tests/test_settings.py", "tests/test_settings_validation.py")),
    Module("memory-inputs", "server/memory/inputs.py", ("tests/test_memory_inputs.py",),
           baseline=("tests/test_memory_units.py",)),
    # The filter a search runs under (stack, service, tags, time) and its translation for the store.
    Module("memory-filters", "server/memory/service.py", ("tests/test_memory_filters.py",),
           functions=("*xǁMemoryǁ_where__mutmut*",), baseline=("tests/test_memory_store.py",)),
    Module("memory-edge-filter", "server/memory/edge.py", ("tests/test_memory_filters.py",),
           functions=("*xǁEdgeStoreǁ_filter__mutmut*",), baseline=("tests/test_memory_store.py",)),
    # Operations: a crash-safe journal (durable whole appends, torn tail skipped, compaction keeps
    # operations whole and running ones always), the per-stack lock (refused at once, released on
    # every exit), the process groups recover may kill (only ours: start time checked, never our own
    # group) and maintenance windows (open, close, expire).
    Module("ops-journal", "server/operations/journal.py",
           ("tests/test_operations.py", "tests/test_operations_promises.py")),
    Module("ops-lock", "server/operations/lock.py", ("tests/test_operations.py", "tests/test_operations_promises.py")),
    Module("ops-procs", "server/operations/procs.py",
           ("tests/test_operations.py", "tests/test_operations_procs.py")),
    Module("ops-maintenance", "server/operations/maintenance.py",
           ("tests/test_operations.py", "tests/test_operations_promises.py")),
    # operations.py: only the functions that decide begin / end / busy / recover / interrupted
    # (who holds a stack, when an unended operation is an orphan, which groups are stopped, that the
    # lock goes on every exit path). Left out: phase/history/get formatting, run_detached/shutdown
    # plumbing and the scrubbing helpers (redaction itself is the `redact` module's promise).
    Module("ops-operations", "server/operations/operations.py",
           ("tests/test_operations.py", "tests/test_operations_promises.py"),
           functions=("*xǁOperationǁchild__mutmut*", "*xǁOperationǁend__mutmut*", "*xǁOperationǁ__exit____mutmut*",
                      "*xǁOperationsǁbegin__mutmut*", "*xǁOperationsǁ_acquire__mutmut*",
                      "*xǁOperationsǁ_live_holder__mutmut*", "*xǁOperationsǁrunning__mutmut*",
                      "*xǁOperationsǁ_as_seen__mutmut*", "*xǁOperationsǁrecover__mutmut*",
                      "*xǁOperationsǁ_recover_locked__mutmut*", "*xǁOperationsǁ_interrupt__mutmut*",
                      "*xǁOperationsǁ_drive__mutmut*")),
    # The rollback path of deploy: the health gate whose verdict triggers it, the files of each
    # successful deployment it puts back, the override that pins the previous images, and the
    # pipeline's decisions (what is restored, in which order, what is recorded).
    Module("deploy-health", "server/deploy/health.py", ("tests/test_deploy_units.py", "tests/test_deploy_gate.py")),
    Module("deploy-snapshots", "server/deploy/snapshots.py", ("tests/test_deploy_files.py",),
           baseline=("tests/test_deploy_units.py",)),
    Module("deploy-override", "server/deploy/override.py",
           ("tests/test_deploy_units.py", "tests/test_deploy_files.py")),
    # The verification window after the gate: critical log lines (new containers only, a last scan
    # at the window's end), log bursts, sustained CPU/memory pressure, restarts.
    Module("deploy-verify", "server/deploy/verify.py",
           ("tests/test_verify_promises.py", "tests/test_deploy_verify_units.py", "tests/test_deploy_units.py")),
    # The watcher's decisions: what counts as broken or crash-looping, and the restart budget (the
    # first restart at once, then doubling backoff, max_restarts per window, then give up).
    Module("monitor-watcher", "server/monitor/watcher.py",
           ("tests/test_monitor_units.py", "tests/test_watcher_backoff.py"),
           functions=("*xǁWatcherǁ_recover__mutmut*", "*xǁWatcherǁ_crash_looping__mutmut*", "*x__broken__mutmut*")),
    Module("deploy-rollback", "server/deploy/rollback.py", ("tests/test_deploy_rollback.py",),
           baseline=("tests/test_deploy_units.py",)),
    # Where a rollback goes (the last good deployment, counting interrupted and failed ones) and
    # adoption of what ran before the server.
    Module("deploy-targets", "server/deploy/targets.py", ("tests/test_deploy_rollback.py",),
           baseline=("tests/test_deploy_units.py",)),
    # Restoring a backup: every file checked before any change, the way each database comes back
    # (running; its archive; a fresh data directory), the data check, errors that say what changed.
    # The engine-facing halves (revive.py, the real replay) are held by the docker tests.
    Module("backups-restore", "server/backups/restore.py", ("tests/test_restore_units.py",)),
    # Restore drills: every file's checksum, damaged files not drilled, a scratch tree or database
    # judged against the archive's content and the row counts recorded at dump time.
    Module("backups-verify", "server/backups/verify.py", ("tests/test_verify_units.py",)),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested in parallel (default 2)")
    parser.add_argument("--only", default="", help="comma-separated module slugs")
    parser.add_argument("--report", type=Path, default=CACHE / "report.md")
    parser.add_argument("--label", default="", help="a title suffix for the report, e.g. 'before'")
    parser.add_argument("--recheck", type=Path, default=None,
                        help="a finished run's cache dir: rerun only its survivors against the current tests")
    parser.add_argument("--rescore", type=Path, nargs="*", default=None,
                        help="re-render report(s).json with the current equivalent list, without running")
    args = parser.parse_args()
    if args.rescore is not None:
        return rescore(args.rescore, args.report, args.label)
    wanted = {s for s in args.only.split(",") if s}
    modules = [m for m in MODULES if not wanted or m.slug in wanted]
    if wanted - {m.slug for m in MODULES}:
        print(f"unknown module(s): {sorted(wanted - {m.slug for m in MODULES})}", file=sys.stderr)
        return 2
    equivalent = load_equivalent(EQUIVALENT)
    started = time.monotonic()
    results = []
    for module in modules:
        print(f"== {module.slug}: {module.path} against {', '.join(module.tests)}", flush=True)
        if args.recheck is not None:
            results.append(recheck_module(module, args.recheck, args.jobs, equivalent.get(module.slug, {})))
        else:
            results.append(run_module(module, args.jobs, equivalent.get(module.slug, {})))
        r = results[-1]
        print(f"   {r['killed']}/{r['scored']} killed ({r['score']}), {len(r['survivors'])} survivor(s), "
              f"{r['equivalent']} equivalent, {r['seconds']:.0f}s", flush=True)
    total_s = time.monotonic() - started
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(render(results, total_s, args.label))
    args.report.with_suffix(".json").write_text(json.dumps({"seconds": total_s, "modules": results}, indent=1))
    print(f"report: {args.report} ({total_s:.0f}s)")
    return 0


def rescore(sources: list[Path], report: Path, label: str) -> int:
    """Merge finished runs (later files win per module) and apply the equivalent list again."""
    equivalent = load_equivalent(EQUIVALENT)
    by_module: dict[str, dict[str, object]] = {}
    seconds = 0.0
    for source in sources:
        data = json.loads(source.read_text())
        seconds += float(data["seconds"])
        for r in data["modules"]:
            by_module[r["module"]] = r
    results = []
    for r in by_module.values():
        listed = equivalent.get(str(r["module"]), {})
        survivors = [s for s in r["survivors"] if s["name"] not in listed]  # type: ignore[attr-defined]
        kept = len(r["survivors"]) - len(survivors) + int(r["equivalent"])  # type: ignore[arg-type]
        scored = int(r["total"]) - kept  # type: ignore[call-overload]
        killed = int(r["killed"])  # type: ignore[call-overload]
        results.append({**r, "survivors": survivors, "equivalent": kept, "scored": scored,
                        "score": f"{100 * killed / scored:.1f}%" if scored else "n/a"})
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(results, seconds, label))
    report.with_suffix(".json").write_text(json.dumps({"seconds": seconds, "modules": results}, indent=1))
    print(f"report: {report}")
    return 0


def load_equivalent(path: Path) -> dict[str, dict[str, str]]:
    """`| module | mutant | reason |` rows of the equivalent-survivor list."""
    out: dict[str, dict[str, str]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] and not set(cells[0]) <= {"-", " "} and cells[0] != "module":
            out.setdefault(cells[0], {})[cells[1]] = cells[2]
    return out


def run_module(module: Module, jobs: int, equivalent: dict[str, str]) -> dict[str, object]:
    work = CACHE / "work" / module.slug
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in COPY:
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tests = _tests(module)
    (work / "pyproject.toml").write_text(pyproject(module, tests))
    started = time.monotonic()
    run = _mutmut(work, ["run", "--max-children", str(jobs), *module.functions])
    return _result(module, work, tests, run, time.monotonic() - started, equivalent)


def recheck_module(module: Module, cache: Path, jobs: int, equivalent: dict[str, str]) -> dict[str, object]:
    """Rerun only the survivors of a finished run, with this tree's tests. The module's source must
    be unchanged since that run (mutant names are per function)."""
    work = cache / "work" / module.slug
    if (work / module.path).read_text() != (REPO / module.path).read_text():
        raise SystemExit(f"{module.path} changed since the run in {work}: run the module again instead")
    for target in (work / "tests", work / "mutants" / "tests"):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(REPO / "tests", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tests = _tests(module)
    for target in (work, work / "mutants"):
        (target / "pyproject.toml").write_text(pyproject(module, tests))
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)  # new tests: map tests to functions again
    alive = sorted(n for n, s in read_statuses(work).items() if s not in KILLED)
    started = time.monotonic()
    run = _mutmut(work, ["run", "--max-children", str(jobs), *alive]) if alive else None
    return _result(module, work, tests, run, time.monotonic() - started, equivalent)


def _tests(module: Module) -> list[str]:
    tests = [t for t in module.tests if (REPO / t.split("::")[0]).is_file()]
    return tests or [t for t in module.baseline if (REPO / t.split("::")[0]).is_file()]


def _mutmut(work: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUTANT_", "PYTEST_"))}
    env["PYTHONPATH"] = str(work)  # the copy, never the editable install of the real tree
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=3600)


def _result(module: Module, work: Path, tests: list[str], run: subprocess.CompletedProcess[str] | None,
            seconds: float, equivalent: dict[str, str]) -> dict[str, object]:
    if run is not None:
        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / f"{module.slug}.log").write_text(run.stdout + "\n--- stderr\n" + run.stderr)
    statuses = read_statuses(work)
    if (run is not None and run.returncode != 0) or not statuses:
        print(f"   mutmut failed; see {CACHE / (module.slug + '.log')}", file=sys.stderr)
    killed = [n for n, s in statuses.items() if s in KILLED]
    alive = sorted(n for n, s in statuses.items() if n not in killed)
    survivors = [n for n in alive if short(n) not in equivalent]
    kept = [n for n in alive if short(n) in equivalent]
    scored = len(statuses) - len(kept)
    return {
        "module": module.slug,
        "path": module.path,
        "tests": tests,
        "total": len(statuses),
        "killed": len(killed),
        "equivalent": len(kept),
        "scored": scored,
        "score": f"{100 * len(killed) / scored:.1f}%" if scored else "n/a",
        "survivors": [{"name": short(n), "status": statuses[n], "diff": diff(work, module.path, n)} for n in survivors],
        "stale_equivalent": sorted(set(equivalent) - {short(n) for n in alive}),
        "seconds": round(seconds, 1),
        "exit": run.returncode if run is not None else 0,
    }


def pyproject(module: Module, tests: list[str]) -> str:
    base = (REPO / "pyproject.toml").read_text()
    base = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", base)
    lines = [
        "",
        "[tool.mutmut]",
        'source_paths = ["server"]',
        f'only_mutate = ["{module.path}"]',
        'also_copy = ["tools", "prompts"]',
        f"pytest_add_cli_args = {json.dumps(PYTEST_ARGS)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests or ['tests/__init__.py'])}",
        "use_git_change_detection = false",
        f"do_not_mutate_patterns = {json.dumps(PROSE_LINES)}",
        "timeout_multiplier = 5.0",
        "timeout_constant = 10.0",
        "",
    ]
    return base + "\n".join(lines)


def read_statuses(work: Path) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    out: dict[str, str] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        for name, code in (data.get("exit_code_by_key") or {}).items():
            if code is not None:  # None: not run (outside the module's function filter)
                out[name] = status_by_exit_code[code]
    return out


def short(name: str) -> str:
    """`server.yamlsafe.x__screen_events__mutmut_12` -> `x__screen_events__mutmut_12`."""
    return name.rsplit(".", 1)[-1]


def diff(work: Path, path: str, name: str) -> str:
    """The mutant's function against the original, from mutmut's generated module (no subprocess)."""
    functions = _functions(work / "mutants" / path)
    func = short(name)
    original = functions.get(func.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "")
    mutated = functions.get(func, "")
    mutated = mutated.replace(func, func.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", 1)  # same name: diff the body
    lines = difflib.unified_diff(original.splitlines(), mutated.splitlines(), lineterm="", n=0)
    return "\n".join(ln for ln in lines if ln[:1] in "+-" and not ln.startswith(("---", "+++")))


@functools.cache
def _functions(file: Path) -> dict[str, str]:
    source = file.read_text()
    lines = source.splitlines()  # once: ast.get_source_segment splits the whole file per call
    return {
        node.name: "\n".join(lines[node.lineno - 1:node.end_lineno])
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def render(results: list[dict[str, object]], total_s: float, label: str) -> str:
    load = os.getloadavg()
    out = [
        f"# Mutation report{(' (' + label + ')') if label else ''}",
        "",
        f"mutmut, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {total_s:.0f}s in all on "
        f"{os.cpu_count()} cores (load average at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}).",
        "Score = killed / (mutants - equivalent survivors). Equivalent survivors: tests/mutation/equivalent.md.",
        "",
        "| module | mutants | killed | equivalent | survivors | score | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        survivors = r["survivors"]
        assert isinstance(survivors, list)
        out.append(f"| {r['path']} | {r['total']} | {r['killed']} | {r['equivalent']} | {len(survivors)} | "
                   f"{r['score']} | {r['seconds']} |")
    for r in results:
        survivors = r["survivors"]
        assert isinstance(survivors, list)
        stale = r["stale_equivalent"]
        if not survivors and not stale:
            continue
        out += ["", f"## {r['path']}", ""]
        if stale:
            out.append(f"Listed as equivalent but no longer surviving (remove from the list): {', '.join(stale)}")
            out.append("")
        for s in survivors:
            out += [f"- `{s['name']}` ({s['status']})", "", "```diff", s["diff"], "```", ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
