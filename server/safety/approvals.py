"""Human approvals bound to one plan: single-use, expiring, kept in ``DSM_STATE_DIR/approvals``.

An approval names the tool, the act, the stack and the ``plan_id`` of the plan the person was
shown (server/safety/proposals.py computes both the id and the question). It can be used once,
only before it expires, and only for that same plan: the caller recomputes the plan right before
acting and :meth:`ApprovalStore.redeem` refuses when the id moved (files, env, running state,
digests). A refusal never leaves the code usable for a later plan: it is voided.

Codes come from a 31-character alphabet without 0/O, 1/I/L (read aloud, typed on a host):
6 characters, ~8.9e8 values, single-use and short-lived. Each approval is one 0600 JSON file;
every read-modify-write holds an ``flock`` on ``.lock`` so two servers (or the CLI) cannot both
redeem a code.

Out-of-band (``fallback: out_of_band``): the tool answers ``approval_required`` with the code and
the question; a person runs ``docker-stack-mcp approve CODE`` (or ``deny``) on the host; the agent
calls again with ``approval=CODE``. Elicited approvals are recorded here too (already used), so the
audit line of every approved call names a code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from server.errors import DsmError
from server.safety.gate import UNCHANGED, PolicyRefused
from server.statefiles import private_dir, write_private

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
CODE = re.compile(rf"[{ALPHABET}]{{{CODE_LENGTH}}}")
DEFAULT_TTL_S = 600
_KEEP_S = 86400.0
"""Finished or expired approvals stay this long (``approve`` can still say why a code is dead)."""
Status = Literal["pending", "approved", "denied", "used", "void"]


def now() -> float:
    """The clock of approvals (a test replaces it to age an approval past its lifetime)."""
    return time.time()


class ApprovalRequired(PolicyRefused):
    """The act needs a person's approval on the host: the message carries the code and the question."""


class ApprovalRefused(PolicyRefused):
    """An approval code that cannot be used for this call (unknown, denied, used, expired, other plan)."""


@dataclass(frozen=True)
class Approval:
    code: str
    tool: str
    act: str
    stack: str
    plan_id: str
    question: str
    created: float
    expires: float
    status: Status = "pending"
    by: str | None = None
    decided: float | None = None

    def expired(self, now: float) -> bool:
        return now >= self.expires


class ApprovalStore:
    def __init__(self, state_dir: Path, *, clock: Callable[[], float] | None = None) -> None:
        self.root = state_dir / "approvals"
        self.clock = clock or (lambda: now())  # looked up at each call: a test may replace `now`

    # -- the server's side ------------------------------------------------------------------------
    def request(self, *, tool: str, act: str, stack: str, plan_id: str, question: str,
                ttl_s: float = DEFAULT_TTL_S) -> Approval:
        """A pending approval for a person to decide on the host."""
        with self._locked():
            self._prune()
            now = self.clock()
            while True:
                code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
                if not self._path(code).exists():
                    break
            approval = Approval(code=code, tool=tool, act=act, stack=stack, plan_id=plan_id, question=question,
                                created=now, expires=now + ttl_s)
            self._write(approval)
            return approval

    def record(self, *, tool: str, act: str, stack: str, plan_id: str, question: str, by: str) -> Approval:
        """An approval given through elicitation and used at once: recorded for the audit."""
        approval = self.request(tool=tool, act=act, stack=stack, plan_id=plan_id, question=question)
        used = replace(approval, status="used", by=by, decided=approval.created)
        with self._locked():
            self._write(used)
        return used

    def redeem(self, code: str, *, tool: str, stack: str, plan_id: str) -> Approval:
        """Use ``code`` for this call, once; ApprovalRefused (the code voided) when it does not fit."""
        code = code.strip().upper()
        with self._locked():
            found = self.get(code) if CODE.fullmatch(code) else None
            now = self.clock()
            if found is None:
                raise ApprovalRefused(f"approval {code[:20]!r} is unknown (never issued, or older than a day)",
                                      state=UNCHANGED, next_step=_AGAIN)
            if found.status == "used":
                raise ApprovalRefused(f"approval {code} was already used: an approval covers one call",
                                      state=UNCHANGED, next_step=_AGAIN)
            if found.status == "denied":
                raise ApprovalRefused(f"approval {code} was denied by {found.by or 'a person'}", state=UNCHANGED,
                                      next_step="ask the user what they want instead")
            if found.status == "void":
                raise ApprovalRefused(f"approval {code} is void (expired, or tried on another plan)", state=UNCHANGED,
                                      next_step=_AGAIN)
            if (found.tool, found.stack) != (tool, stack):
                raise ApprovalRefused(f"approval {code} was given for {found.tool} on stack {found.stack!r}, not "
                                      f"{tool} on {stack!r}", state=UNCHANGED, next_step=_AGAIN)
            if found.expired(now):
                self._write(replace(found, status="void"))
                raise ApprovalRefused(f"approval {code} expired {_ago(now - found.expires)} ago (approvals last "
                                      f"{round((found.expires - found.created) / 60)} min)", state=UNCHANGED,
                                      next_step=_AGAIN)
            if found.status == "pending":
                raise ApprovalRefused(f"approval {code} has not been approved yet", state=UNCHANGED,
                                      next_step=f"a person runs `docker-stack-mcp approve {code}` on the host; "
                                      "then call again with the same approval")
            if found.plan_id != plan_id:
                self._write(replace(found, status="void"))
                raise ApprovalRefused(f"approval {code} was given for plan {found.plan_id[:12]}, and the plan is now "
                                      f"{plan_id[:12]} (files, env, running state or image digests moved since)",
                                      state=UNCHANGED + "; the approval is void", next_step=_AGAIN)
            used = replace(found, status="used")
            self._write(used)
            return used

    # -- the person's side (docker-stack-mcp approve/deny) ----------------------------------------
    def decide(self, code: str, *, yes: bool, by: str) -> Approval:
        code = code.strip().upper()
        with self._locked():
            found = self.get(code) if CODE.fullmatch(code) else None
            if found is None:
                raise DsmError(f"no approval {code[:20]!r} is waiting", state="nothing was decided")
            if found.status != "pending":
                raise DsmError(f"approval {code} is {found.status}, not waiting for a decision",
                               state="nothing was decided")
            if found.expired(self.clock()):
                raise DsmError(f"approval {code} expired", state="nothing was decided",
                               next_step="the agent calls again to get a new code")
            decided = replace(found, status="approved" if yes else "denied", by=by, decided=self.clock())
            self._write(decided)
            return decided

    def get(self, code: str) -> Approval | None:
        if not CODE.fullmatch(code):
            return None
        try:
            data = json.loads(self._path(code).read_text(encoding="utf-8"))
            return Approval(**data)
        except (OSError, ValueError, TypeError):
            return None

    # -- files ------------------------------------------------------------------------------------
    def _path(self, code: str) -> Path:
        return self.root / f"{code}.json"

    def _write(self, approval: Approval) -> None:
        write_private(self._path(approval.code), json.dumps(asdict(approval), ensure_ascii=False))

    def _prune(self) -> None:
        now = self.clock()
        for path in self.root.glob("*.json"):
            found = self.get(path.stem)
            if found is None or now - max(found.expires, found.decided or 0) > _KEEP_S:
                path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        private_dir(self.root)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


_AGAIN = "call again without approval to get the current plan and a new question"


def _ago(seconds: float) -> str:
    return f"{int(seconds)} s" if seconds < 120 else f"{int(seconds // 60)} min"
