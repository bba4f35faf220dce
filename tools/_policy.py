"""The safety-policy gate as every mutating tool calls it: one line at the top of the tool.

:func:`enforce` runs :func:`server.safety.gate.check` (refusals: mode, ``protected: never``) and,
when the policy asks for a human approval, gets one: through MCP elicitation when the client
can be asked, else by the policy's fallback (``model``: the model's ``confirm=true``; ``deny``;
``out_of_band``: not available yet, so refused). The model's ``confirm`` never stands in for a
human when the client can be asked.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mcp.server.mcpserver import Context

from server.errors import ConfirmationRequired
from server.safety.audit import CURRENT
from server.safety.gate import UNCHANGED, Gate, PolicyRefused, check
from server.settings import Settings
from tools._common import Confirmation, _can_elicit


async def enforce(
    settings: Settings, ctx: Context | None, tool: str, stack: str, act: str, *, confirm: bool = False,
    answer: Any = None, dry_run: bool = False,
) -> Gate:
    """Refuse, ask, or let the act through. ``answer`` is an elicitation outcome the tool already
    obtained for this call (backup_stack asks before its body runs): a human "yes" there counts."""
    gate = check(settings, tool, stack, act, dry_run=dry_run)
    if gate.approval is None:
        return gate
    call = CURRENT.get()
    if call is not None:  # the audit line says which rule asked; `by` once someone answered
        call.approval = {"rule": gate.approval}
    question = (f"{tool} {gate.act} on stack {gate.stack!r}: the safety policy needs your approval "
                f"({gate.approval}). Go ahead?")
    asked = ctx is not None and _can_elicit(ctx, back_channel_only=True)
    if not _human_said_yes(answer) and asked:
        assert ctx is not None
        answer = await ctx.elicit(question, Confirmation)
    if _human_said_yes(answer):
        if call is not None:
            call.approval = {"rule": gate.approval, "by": "user"}
        return dataclasses.replace(gate, human_approved=True)
    if asked:
        raise ConfirmationRequired(f"the user did not approve: {question}", state=UNCHANGED,
                                   next_step="ask the user what they want instead")
    if call is not None and gate.fallback == "model" and confirm:
        call.approval = {"rule": gate.approval, "by": "model (confirm=true, fallback: model)"}
    return _fallback(gate, question, confirm)


def _fallback(gate: Gate, question: str, confirm: bool) -> Gate:
    why = f"{gate.tool} ({gate.act}) on stack {gate.stack!r} needs a human approval ({gate.approval}; {gate.source})"
    if gate.fallback == "model":
        if confirm:
            return gate
        raise ConfirmationRequired(
            f"{why} and this client cannot ask the user", state=UNCHANGED,
            next_step=f"ask the user: {question!r}; only if they agree, call again with confirm=true")
    if gate.fallback == "deny":
        raise PolicyRefused(
            f"{why}, this client cannot ask the user, and the policy's fallback is deny", state=UNCHANGED,
            next_step="use a client that supports MCP elicitation, or a person makes the change by hand")
    raise PolicyRefused(
        f"{why}, this client cannot ask the user, and the policy's fallback is out_of_band: out-of-band "
        "approval is not available yet", state=UNCHANGED,
        next_step="use a client that supports MCP elicitation, or a person makes the change by hand")


def _human_said_yes(answer: Any) -> bool:
    data = getattr(answer, "data", None)
    return getattr(answer, "action", None) == "accept" and bool(getattr(data, "confirm", False))
