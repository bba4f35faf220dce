"""Approvals bound to one plan (server/safety/approvals.py), and the `approve`/`deny` commands a
person runs on the host, through the real CLI in a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.safety import approvals
from server.safety.approvals import ALPHABET, CODE, ApprovalRefused, ApprovalStore

EXE = str(Path(sys.executable).parent / "docker-stack-mcp")


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def pending(store: ApprovalStore, plan_id: str = "p1" * 16, ttl_s: float = 600) -> str:
    return store.request(tool="deploy_stack", act="deploy", stack="web", plan_id=plan_id,
                         question="Deploy stack 'web': web recreate a -> b. Go ahead?", ttl_s=ttl_s).code


def redeem(store: ApprovalStore, code: str, plan_id: str = "p1" * 16, tool: str = "deploy_stack") -> None:
    store.redeem(code, tool=tool, stack="web", plan_id=plan_id)


def test_an_approval_is_single_use_and_bound_to_its_plan(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path, clock=Clock())
    code = pending(store)
    assert CODE.fullmatch(code) and not set(code) & set("01OIL")
    with pytest.raises(ApprovalRefused, match="not been approved yet"):
        redeem(store, code)
    store.decide(code, yes=True, by="ana@host")
    with pytest.raises(ApprovalRefused, match="given for deploy_stack on stack 'web', not rollback"):
        redeem(store, code, tool="rollback")
    redeem(store, code.lower())  # typed in lower case: the same code
    with pytest.raises(ApprovalRefused, match="already used"):
        redeem(store, code)  # replayed

    other = pending(store)
    store.decide(other, yes=True, by="ana@host")
    with pytest.raises(ApprovalRefused, match="the plan is now p2p2") as refused:
        redeem(store, other, plan_id="p2" * 16)
    assert "nothing was changed" in str(refused.value)
    with pytest.raises(ApprovalRefused, match="void"):
        redeem(store, other)  # a code tried on another plan is dead, even if the plan comes back

    files = list((tmp_path / "approvals").glob("*.json"))
    assert len(files) == 2 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert (tmp_path / "approvals").stat().st_mode & 0o777 == 0o700


def test_expired_denied_and_unknown_approvals_are_refused(tmp_path: Path) -> None:
    clock = Clock()
    store = ApprovalStore(tmp_path, clock=clock)
    code = pending(store, ttl_s=600)
    store.decide(code, yes=True, by="ana@host")
    clock.t += 601
    with pytest.raises(ApprovalRefused, match="expired 1 s ago"):
        redeem(store, code)
    late = pending(store, ttl_s=600)
    clock.t += 601
    with pytest.raises(Exception, match="expired"):
        store.decide(late, yes=True, by="ana@host")  # too late to approve, too
    denied = pending(store)
    store.decide(denied, yes=False, by="ana@host")
    with pytest.raises(ApprovalRefused, match="denied by ana@host"):
        redeem(store, denied)
    for bad in ("ZZZZZZ", "../../x", ""):
        with pytest.raises(ApprovalRefused, match="unknown"):
            redeem(store, bad)


def test_the_module_clock_ages_approvals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the server uses (no clock given): the module's `now`, replaceable by a test."""
    store = ApprovalStore(tmp_path)
    code = pending(store)
    store.decide(code, yes=True, by="ana@host")
    real = time.time()
    monkeypatch.setattr(approvals, "now", lambda: real + 3600)
    with pytest.raises(ApprovalRefused, match="expired"):
        redeem(store, code)


# -- the real CLI in a pseudo-terminal ------------------------------------------------------------

def cli_env(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "stacks"
    root.mkdir(exist_ok=True)
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DSM_STACKS_ROOT": str(root),
            "DSM_STATE_DIR": str(tmp_path / "state"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}  # this checkout's server, not an installed one


def run_in_pty(args: list[str], env: dict[str, str], answer: str | None, timeout: float = 30) -> tuple[int, str]:
    """Run the CLI with its stdin/stdout on a pseudo-terminal; type ``answer`` at the y/N prompt."""
    main, child = pty.openpty()
    proc = subprocess.Popen([EXE, *args], stdin=child, stdout=child, stderr=child, env=env,
                            start_new_session=True)
    os.close(child)
    out = b""
    deadline = time.monotonic() + timeout
    answered = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if answer is not None and not answered and b"[y/N]" in out:
                    os.write(main, answer.encode() + b"\n")
                    answered = True
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(deadline - time.monotonic(), 1)), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
        os.close(main)


def test_approve_and_deny_through_the_real_cli(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    store = ApprovalStore(tmp_path / "state")
    yes, no, piped, refused = (pending(store) for _ in range(4))

    rc, out = run_in_pty(["approve", yes], env, "y")
    assert rc == 0, out
    assert "Deploy stack 'web': web recreate a -> b" in out and "plan p1p1p1p1p1p1" in out and "Approved by" in out
    assert store.get(yes).status == "approved"  # type: ignore[union-attr]

    rc, out = run_in_pty(["approve", no], env, "")  # Enter: the default is No
    assert rc == 0 and "Not approved" in out and store.get(no).status == "denied", out  # type: ignore[union-attr]

    rc, out = run_in_pty(["deny", refused], env, None)
    assert rc == 0 and "Denied by" in out and store.get(refused).status == "denied", out  # type: ignore[union-attr]

    # Not a terminal (a pipe): refused, nothing approved.
    result = subprocess.run([EXE, "approve", piped], input="y\n", capture_output=True, text=True, env=env,
                            timeout=30)
    assert result.returncode == 2 and "not a terminal" in result.stderr
    assert store.get(piped).status == "pending"  # type: ignore[union-attr]

    rc, out = run_in_pty(["approve", yes], env, "y")  # decided already
    assert rc == 1 and "not waiting" in out, out
    assert set(ALPHABET) >= set(yes)


def test_the_lifetime_is_a_policy_key() -> None:
    from server.errors import SettingsError
    from server.safety.policy import parse

    assert parse("approval_ttl_s: 120\n", "p").approval_ttl_s == 120
    assert parse("", "p").approval_ttl_s == 600
    with pytest.raises(SettingsError, match="key 'approval_ttl_s'"):
        parse("approval_ttl_s: 5\n", "p")
