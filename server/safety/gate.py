"""The one gate every mutating tool passes: :func:`check` (tool, stack, act) against the policy.

It refuses what the policy forbids (mode, ``protected: never``) before anything happens, and
says whether a human approval is needed (``protected: approve``, an ``approve`` rule). Asking
for that approval is the tool layer's part (tools/_policy.py): it needs the MCP context.

The fallback (what happens when an approval is needed and the client cannot ask the user) also
governs the ``confirm`` the tools already ask for (restore, data rollback, critical stacks):
:data:`FALLBACK` carries it to ``require_confirmation`` for the rest of the call.

Approvals are bound to a plan (server/safety/approvals.py, server/safety/proposals.py): the tool
layer asks the question that shows the plan, and checks the plan again before acting.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from server.errors import DsmError, SettingsError
from server.safety.policy import DESTRUCTIVE_ACTS, ApproveRule, Fallback, Loaded, PolicySource
from server.settings import Settings

FALLBACK: ContextVar[Fallback] = ContextVar("dsm_policy_fallback", default="model")
UNCHANGED = "nothing was changed"
READS_STACK = frozenset({"create"})
DEFAULT_APPROVE = (
    ApproveRule(tool="rollback", acts=["rollback_data"]),
    ApproveRule(tool="deploy_stack", acts=["deploy"], critical=True),
    ApproveRule(tool="update_stack", acts=["deploy"], critical=True),
    ApproveRule(tool="scale_service", acts=["deploy"], critical=True),
    ApproveRule(tool="rollback", critical=True),
    ApproveRule(tool="stack_control", acts=["stop", "remove"], critical=True),
    ApproveRule(tool="backup_stack", acts=["restore"]),
)
"""What needs ``confirm`` without a policy. When the client can ask the user (or the fallback is not
``model``) these become approvals bound to the plan, asked by the gate instead of each tool."""


class PolicyRefused(DsmError):
    """The safety policy (DSM_POLICY / DSM_READ_ONLY) does not allow this act."""


@dataclass(frozen=True)
class Gate:
    tool: str
    act: str
    stack: str
    approval: str | None
    """Why a human approval is needed (the rule, for the question and refusals); None: not needed."""
    fallback: Fallback
    source: str
    human_approved: bool = False
    """A person said yes to this call (the tool may then skip asking its own confirm again)."""
    ttl_s: int = 600
    """How long an approval stays usable (policy ``approval_ttl_s``)."""
    plan_id: str | None = None
    """The plan the person approved (deploy_stack applies exactly it)."""
    code: str | None = None
    """The approval code used (elicited approvals get one too, for the audit)."""


@cache
def source_for(path: Path | None, read_only: bool) -> PolicySource:
    return PolicySource(path, read_only=read_only)


def current(settings: Settings) -> Loaded:
    return source_for(settings.policy_path, settings.read_only).current()


def check(settings: Settings, tool: str, stack: str, act: str, *, dry_run: bool = False,
          can_ask: bool = False) -> Gate:
    """Refuse what the policy forbids; otherwise say whether a human approval is needed.
    ``can_ask``: the client can elicit, so what needs ``confirm`` is asked as an approval of the plan."""
    try:
        loaded = current(settings)
    except SettingsError as exc:
        raise PolicyRefused(
            f"{tool} refused: the safety policy file is unusable ({exc.what})", state=UNCHANGED,
            next_step="a person fixes the policy file (it is re-read at the next call); reading tools still work",
        ) from None
    policy, source = loaded.policy, loaded.source
    FALLBACK.set(policy.fallback)
    names, critical = _names(settings, stack)
    label = f"{tool} ({act}) on stack {names[0]!r}"
    if policy.mode == "read_only":
        raise PolicyRefused(
            f"{label} refused by the safety policy: mode read_only ({source})", state=UNCHANGED,
            next_step="read-only tools still work; a person can change the mode in the policy file (or unset "
            "DSM_READ_ONLY and restart) if changes should be allowed")
    if policy.mode == "non_destructive" and act in DESTRUCTIVE_ACTS:
        raise PolicyRefused(
            f"{label} refused by the safety policy: mode non_destructive ({source}) allows no restore, remove, "
            "data rollback or pruning", state=UNCHANGED,
            next_step="deploys, updates and rollbacks without data are allowed; a person can do this by hand "
            "or change the mode in the policy file")
    # A backup reads the stack and writes only our own store: protection is about changing stacks.
    # A dry run only computes a plan: reading a protected stack stays allowed.
    protection = policy.protection(names) if act not in READS_STACK and not dry_run else None
    if protection and protection[1] == "never":
        raise PolicyRefused(
            f"{label} refused by the safety policy: stack {names[0]!r} is protected ({protection[0]!r}: never, "
            f"{source}); confirm does not change that", state=UNCHANGED,
            next_step="reading the stack stays allowed; a person makes this change by hand, or changes the "
            "policy file")
    approval = None
    if not dry_run:
        if protection:
            approval = f"stack {names[0]!r} is protected ({protection[0]!r}: approve)"
        else:
            for n, rule in enumerate(policy.approve):
                if rule.matches(tool, act, names, critical() if rule.critical is not None else False):
                    approval = f"rule approve[{n}] asks for a human approval of {tool} {act}"
                    break
            if approval is None and (policy.fallback != "model" or can_ask):
                # The tools skip their own question when confirm=true; with a fallback other than
                # `model` that confirm may not stand in for a human, and a client that can ask is
                # asked here, with the plan, so the acts they guard (what needs confirm without a
                # policy) are approvals bound to the plan.
                for rule in DEFAULT_APPROVE:
                    if rule.matches(tool, act, names, critical() if rule.critical is not None else False):
                        approval = f"{act} of {'a critical stack' if rule.critical else 'data'} needs confirmation"
                        break
    return Gate(tool=tool, act=act, stack=names[0], approval=approval, fallback=policy.fallback, source=source,
                ttl_s=policy.approval_ttl_s)


def _names(settings: Settings, raw: str) -> tuple[tuple[str, ...], _Critical]:
    """The names a ``protected`` glob is matched against: the project name, the directory name
    and the argument as given (a stack must not escape its protection by being named another way)."""
    from server.monitor.resolve import resolve_stack

    try:
        ref = resolve_stack(settings, raw)
    except DsmError:
        ref = None
    names = [ref.name] if ref is not None else []
    if ref is not None and ref.location is not None:
        names.append(ref.location.directory.name)
    names.append(raw.strip("/").split("/")[0] if not raw.startswith("/") else Path(raw).name)
    names.append(raw)
    location = ref.location if ref is not None else None
    return tuple(dict.fromkeys(n for n in names if n)), _Critical(location)


class _Critical:
    """Whether the stack's x-dsm marks it critical, read only when an approve rule asks."""

    def __init__(self, location: object) -> None:
        self._location = location

    def __call__(self) -> bool:
        if self._location is None:
            return False
        from server.monitor.stackpolicy import stack_policy

        try:
            return bool(stack_policy(self._location).critical)  # type: ignore[arg-type]
        except DsmError:
            return True  # unreadable x-dsm: ask rather than assume it is not critical
