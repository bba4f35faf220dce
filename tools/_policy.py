"""The safety-policy gate as every mutating tool calls it: one line at the top of the tool.

:func:`enforce` runs :func:`server.safety.gate.check` (refusals: mode, ``protected: never``) and,
when a human approval is needed, gets one for exactly the plan the person is shown
(server/safety/proposals.py): through MCP elicitation when the client can be asked, else by the
policy's fallback (``model``: the model's ``confirm=true``; ``deny``; ``out_of_band``: a code a
person approves on the host). Right before the act the plan is computed again; if anything moved
the call is refused with the new plan. The model's ``confirm`` never stands in for a human when
the client can be asked.

For a new mutating tool (update_stack, scale_service), see tools/monitor.py's stack_control:
an ``approval`` argument (ApprovalArg), a plan resolver (:func:`planned_if_asked` with a function
returning a :class:`Proposal`), the body taking ``shown`` (that resolver) and ``asked``
(``Resolve(asker(resolver))``), then ``gate = await enforce(..., plan=..., code=approval,
shown=shown, answer=asked)`` before acting; ``gate.human_approved`` stands for its own confirm.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context

from server.errors import ConfirmationRequired, DsmError
from server.safety.audit import CURRENT
from server.safety.gate import UNCHANGED, Gate, PolicyRefused, check
from server.safety.proposals import Proposal
from server.settings import Settings
from tools._common import Confirmation, _can_elicit, note, runtime_of

log = logging.getLogger("docker_stack_mcp.policy")
PlanFn = Callable[[], Awaitable[Proposal]]


async def enforce(
    settings: Settings, ctx: Context | None, tool: str, stack: str, act: str, *, confirm: bool = False,
    answer: Any = None, dry_run: bool = False, plan: PlanFn | None = None, code: str | None = None,
    shown: Proposal | None = None,
) -> Gate:
    """Refuse, ask, or let the act through. ``answer`` is an elicitation outcome a resolver already
    obtained for this call (the question it asked came from ``plan``); a human "yes" there counts.
    ``plan`` computes the plan now (called again right before acting); ``shown`` the plan a resolver
    computed and asked about; ``code`` an out-of-band approval."""
    can_ask = ctx is not None and _can_elicit(ctx, back_channel_only=False)
    gate = check(settings, tool, stack, act, dry_run=dry_run, can_ask=can_ask and plan is not None)
    if gate.approval is None:
        if code:  # said, not refused: the call goes on as it would without it
            note(f"approval {code.strip()[:20]!r} not used: no safety policy rule asks for an approval for "
                 f"{tool} ({act}){' in a dry run' if dry_run else ''} on stack {gate.stack!r}")
        return gate
    call = CURRENT.get()
    if call is not None:  # the audit line says which rule asked; `by` once someone answered
        call.approval = {"rule": gate.approval}
    if plan is None:
        return await _unbound(gate, ctx, confirm, answer)
    from server.safety import approvals
    from server.safety.approvals import ApprovalRefused, ApprovalRequired, ApprovalStore

    if shown is None or code:
        shown = _with_reason(gate, await plan())
    if shown.noop and not code:
        return gate  # nothing would change: the tool answers so without acting (a code given is checked)
    store = ApprovalStore(settings.state_dir)
    if code:
        if call is not None:  # a refused code is recorded too: who tried which approval
            call.approval = {"rule": gate.approval, "code": code.strip().upper()[:20]}
        try:
            used = store.redeem(code, tool=tool, stack=gate.stack, plan_id=shown.plan_id)
        except ApprovalRefused as exc:
            if "the plan is now" in exc.what:  # show the new plan instead of acting on the old approval
                raise ApprovalRefused(f"{exc.what}. The new plan: {shown.question}", state=exc.state,
                                      next_step=_ask_again(gate)) from None
            raise
        return _approved(gate, call, used.code, used.by or "a person on the host", shown.plan_id)
    back_channel = ctx is not None and _can_elicit(ctx, back_channel_only=True)
    if not _was_asked(answer) and back_channel:
        assert ctx is not None
        answer = await ctx.elicit(shown.question, Confirmation)
    if _human_said_yes(answer):
        # The person may have taken minutes: act only on the plan they saw, and only in time.
        if approvals.now() - shown.computed_at > gate.ttl_s:
            raise ApprovalRefused(f"the approval came after {gate.ttl_s} s: it expired", state=UNCHANGED,
                                  next_step="call again to ask with the current plan")
        now = _with_reason(gate, await plan())
        if now.plan_id != shown.plan_id:
            raise ApprovalRefused(f"the plan moved while the user was asked ({shown.plan_id[:12]} -> "
                                  f"{now.plan_id[:12]}); the new plan: {now.question}", state=UNCHANGED,
                                  next_step="call again: the user is asked about the new plan")
        used = store.record(tool=tool, act=act, stack=gate.stack, plan_id=shown.plan_id, question=shown.question,
                            by="user")
        return _approved(gate, call, used.code, "user", shown.plan_id)
    if _was_asked(answer) or back_channel:
        raise ConfirmationRequired(f"the user did not confirm (approve) this: {shown.question}", state=UNCHANGED,
                                   next_step="ask the user what they want instead")
    if gate.fallback == "out_of_band":
        pending = store.request(tool=tool, act=act, stack=gate.stack, plan_id=shown.plan_id,
                                question=shown.question, ttl_s=gate.ttl_s)
        if call is not None:
            call.approval = {"rule": gate.approval, "code": pending.code, "by": "pending"}
        raise ApprovalRequired(
            f"approval_required: code {pending.code}. {_why(gate)}; this client cannot ask the user, so a person "
            f"approves on the host. The question: {shown.question}",
            state=UNCHANGED + f"; the approval waits {gate.ttl_s // 60} min",
            next_step=f"tell the user to run `docker-stack-mcp approve {pending.code}` (or deny) on the host, then "
            f"call again with the same arguments and approval='{pending.code}'")
    if call is not None and gate.fallback == "model" and confirm:
        call.approval = {"rule": gate.approval, "by": "model (confirm=true, fallback: model)"}
    return _fallback(gate, shown.question, confirm)


def asker(plan_resolver: Callable[..., Awaitable[Proposal | None]]) -> Callable[..., Awaitable[Any]]:
    """A ``Resolve(...)`` resolver asking the question of ``plan_resolver``'s proposal before the tool
    body (mid-call on handshake protocols, an InputRequiredResult on 2026-07-28); None when nothing is
    to be asked. The tool body takes the same ``Resolve(plan_resolver)`` (one computation per round)
    and passes it to :func:`enforce` as ``shown``: the plan the answer was given for. The question
    carries the plan id, so a plan that moved between rounds is asked about again."""
    from mcp.server.mcpserver.resolve import Elicit, Resolve

    async def ask(shown: Proposal | None) -> Any:
        return Elicit(shown.question, Confirmation) if shown is not None and not shown.noop else None

    ask.__annotations__ = {"shown": Annotated[Proposal | None, Resolve(plan_resolver)], "return": Any}
    ask.__qualname__ = ask.__name__ = f"ask_{getattr(plan_resolver, '__name__', 'plan')}"
    return ask


async def planned_if_asked(ctx: Context, tool: str, stack: str, act: str, code: str | None,
                           plan: PlanFn) -> Proposal | None:
    """For a tool's plan resolver: the proposal when the gate wants an approval and the client can
    be asked (no code given); None otherwise, and on any error (the tool body raises it properly)."""


    if code or not _can_elicit(ctx, back_channel_only=False):
        return None
    try:
        runtime = runtime_of(ctx)
        gate = check(runtime.settings, tool, stack, act, can_ask=True)
        if gate.approval is None:
            return None
        return _with_reason(gate, await plan())
    except DsmError:
        return None
    except Exception:
        log.debug("approval question not computed", exc_info=True)
        return None


def _with_reason(gate: Gate, proposal: Proposal) -> Proposal:
    """The question says why a person is asked (the policy rule): part of what they approve."""
    if proposal.noop:
        return proposal
    return dataclasses.replace(proposal, question=f"{proposal.question} (Your approval is asked because "
                               f"{gate.approval})")


def _approved(gate: Gate, call: Any, code: str, by: str, plan_id: str) -> Gate:
    if call is not None:
        call.approval = {"rule": gate.approval, "by": by, "code": code, "plan_id": plan_id}
    return dataclasses.replace(gate, human_approved=True, plan_id=plan_id, code=code)


async def _unbound(gate: Gate, ctx: Context | None, confirm: bool, answer: Any) -> Gate:
    """A tool without a plan to show: the question names the act and the rule."""
    call = CURRENT.get()
    question = f"{gate.tool} {gate.act} on stack {gate.stack!r}: the safety policy needs your approval " \
               f"({gate.approval}). Go ahead?"
    asked = ctx is not None and _can_elicit(ctx, back_channel_only=True)
    if not _human_said_yes(answer) and asked:
        assert ctx is not None
        answer = await ctx.elicit(question, Confirmation)
    if _human_said_yes(answer):
        if call is not None:
            call.approval = {"rule": gate.approval or "", "by": "user"}
        return dataclasses.replace(gate, human_approved=True)
    if asked:
        raise ConfirmationRequired(f"the user did not approve: {question}", state=UNCHANGED,
                                   next_step="ask the user what they want instead")
    if gate.fallback == "out_of_band":
        raise PolicyRefused(f"{_why(gate)}: out-of-band approval needs a tool that shows its plan",
                            state=UNCHANGED, next_step="a person makes the change by hand")
    if call is not None and gate.fallback == "model" and confirm:
        call.approval = {"rule": gate.approval or "", "by": "model (confirm=true, fallback: model)"}
    return _fallback(gate, question, confirm)


def _why(gate: Gate) -> str:
    return f"{gate.tool} ({gate.act}) on stack {gate.stack!r} needs a human approval ({gate.approval}; {gate.source})"


def _ask_again(gate: Gate) -> str:
    if gate.fallback == "out_of_band":
        return "call again without approval for a new code bound to the new plan"
    return "call again: the user is asked about the new plan"


def _fallback(gate: Gate, question: str, confirm: bool) -> Gate:
    why = _why(gate)
    if gate.fallback == "model":
        if confirm:
            return gate
        raise ConfirmationRequired(
            f"{why} and this client cannot ask the user", state=UNCHANGED,
            next_step=f"ask the user: {question!r}; only if they agree, call again with confirm=true")
    raise PolicyRefused(
        f"{why}, this client cannot ask the user, and the policy's fallback is deny", state=UNCHANGED,
        next_step="use a client that supports MCP elicitation, or a person makes the change by hand")


def _was_asked(answer: Any) -> bool:
    """A resolver that asked nothing still injects an outcome: accepted, without data."""
    action = getattr(answer, "action", None)
    return answer is not None and (action != "accept" or getattr(answer, "data", None) is not None)


def _human_said_yes(answer: Any) -> bool:
    data = getattr(answer, "data", None)
    return getattr(answer, "action", None) == "accept" and bool(getattr(data, "confirm", False))
