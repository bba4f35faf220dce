"""What every tool module shares: annotations, error mapping, progress.

Only :class:`ToolError` text reaches the model (the SDK turns any other exception into a bare
"Error executing tool"), so every tool is wrapped by :func:`tool_errors`: our own errors pass
through with their message (scrubbed of secrets, as is a ToolError's); anything else is logged to stderr with its
traceback and reported as an internal error that says the state is unknown.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field, WrapValidator

from server.errors import DsmError
from server.redact import Scrubber, seen_secrets

log = logging.getLogger("docker_stack_mcp.tools")


def scrub_error(text: str) -> str:
    """A tool error's text without credentials: their shapes, and every secret value a stack load
    in this process has seen (.env values, given env), whatever code raised it."""
    return Scrubber(seen_secrets())(text)
def _null_or_text(value: Any, handler: Any) -> str | None:
    return None if value is None else str(handler(value))


# An id argument is a plain ``str`` to the SDK: it turns a JSON string "null" into None for any
# other annotation, and deploy_stack(plan_id="null") then skipped its plan check. JSON null still
# means "not given"; every string is checked against the id's format (checked_id).
if TYPE_CHECKING:
    from server.runtime import Runtime

    OptionalId = str | None
else:
    OptionalId = Annotated[str, WrapValidator(_null_or_text)]

def checked_id(value: str | None, name: str, pattern: re.Pattern[str], where: str) -> str | None:
    """``value`` unless it is a string that is not an id of ``pattern`` (then a clear DsmError)."""
    if value is not None and not pattern.fullmatch(value):
        raise DsmError(f"{name}={value[:80]!r} is not an id {where}", state="nothing was changed",
                       next_step=f"pass an id exactly as {where} gives it, or leave {name} out")
    return value


ApprovalArg = Annotated[OptionalId, Field(description="Approved approval_required code.")]
"""The out-of-band approval code argument of every mutating tool (server/safety/approvals.py)."""

P = ParamSpec("P")
R = TypeVar("R")

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
"""Observes only; safe to call any time, any number of times."""
CHANGES_IDEMPOTENT = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
"""Writes our own state (memory, journal) but never touches containers; repeating is harmless."""
CHANGES_STACKS = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
)
"""Changes running containers, volumes or files under the stacks root."""


NOTES: ContextVar[list[str] | None] = ContextVar("dsm_tool_notes", default=None)
"""Short notes for the caller that are not an error (an approval code nobody asked for): put in
the result's ``next_steps`` (else its ``detail``) by :func:`tool_errors`, in one place."""


def note(text: str) -> None:
    found = NOTES.get()
    if found is not None and text not in found:
        found.append(text)


def _with_notes(result: R, notes: list[str]) -> R:
    if not notes or not isinstance(result, BaseModel):
        return result
    values = result.__dict__
    if isinstance(values.get("next_steps"), list):
        return result.model_copy(update={"next_steps": [*notes, *values["next_steps"]]})
    if isinstance(values.get("detail"), str):
        return result.model_copy(update={"detail": "; ".join([values["detail"], *notes])})
    return result


def tool_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Map exceptions to model-facing tool errors. Keeps the signature for the SDK's schema."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from server.safety.audit import CURRENT, outcome_of

        call = CURRENT.get()  # the audit line of this call (set by the server; None in bare tests)
        notes = NOTES.set([])
        try:
            result = _with_notes(await fn(*args, **kwargs), NOTES.get() or [])
            if call is not None:
                call.finish("ok", result=result)
            return result
        except ToolError as exc:
            if call is not None:
                call.finish("error", detail=scrub_error(str(exc)))
            raise ToolError(scrub_error(str(exc))) from None
        except DsmError as exc:
            message = scrub_error(str(exc))
            if call is not None:
                call.finish(outcome_of(exc), detail=message)
            log.info("tool %s refused: %s", fn.__name__, message)
            raise ToolError(message) from None
        except Exception as exc:
            if call is not None:
                call.finish("error", detail=f"internal error ({type(exc).__name__})")
            log.exception("tool %s failed unexpectedly", fn.__name__)
            raise ToolError(
                f"{fn.__name__} failed with an internal error ({type(exc).__name__}). State: unknown; "
                "the server logged the details to stderr. Next: call a read-only tool such as list_stacks "
                "to see the current state before retrying."
            ) from None
        finally:
            NOTES.reset(notes)

    # The SDK publishes the docstring as the tool's description: strip the code indentation.
    wrapper.__doc__ = inspect.cleandoc(fn.__doc__ or "")
    return wrapper


async def progress(ctx: Context | None, done: float, total: float, message: str) -> None:
    """Report progress when the client asked for it; never fail a tool because it did not."""
    if ctx is None:
        return
    try:
        await ctx.report_progress(done, total, message)
    except Exception:  # a client that went away must not abort the operation itself
        log.debug("progress notification not delivered", exc_info=True)


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


class Confirmation(BaseModel):
    confirm: bool = Field(description="Yes, go ahead")


async def confirm_destructive(ctx: Context | None, question: str, confirm: bool) -> None:
    """Ask the user before a destructive act; raise ConfirmationRequired unless they agree.

    When the client supports MCP elicitation the user is asked (whatever ``confirm`` says: a
    human answers, not the model). Otherwise the caller must pass ``confirm=True``, which the
    error message tells the model to do only after the user agreed.

    This asks from inside the tool body, which needs the handshake protocols' back-channel
    (<= 2025-11-25, what stdio clients negotiate today); on 2026-07-28 it falls back to
    ``confirm``. To ask on every protocol, ask from a ``Resolve(...)`` resolver with
    :func:`ask_user` and check the outcome with :func:`require_confirmation` (backup_stack does).
    """
    if ctx is not None and _can_elicit(ctx, back_channel_only=True):
        answer = await ctx.elicit(question, Confirmation)
        require_confirmation(answer, question, confirm)
        return
    require_confirmation(None, question, confirm)


PLAN_ID = re.compile(r"[0-9a-f]{32}")
"""A deploy plan's id (deploy_stack and update_stack dry runs)."""


def runtime_of(ctx: Context) -> Runtime:
    """The server's Runtime, for a resolver that runs before the tool body (the lifespan's context)."""
    from typing import cast

    return cast("Runtime", ctx.request_context.lifespan_context)


def on_target(ctx: Context, stack: str, make: Callable[[Runtime], Awaitable[R]]) -> Callable[[], Awaitable[R]]:
    """For a plan resolver: ``make`` on the Runtime of the engine ``stack`` runs on (server.targets)."""

    async def made() -> R:
        return await make(await runtime_of(ctx).for_stack(stack))

    return made


def confirmer(ctx: Context) -> Callable[[str], Awaitable[bool]]:
    """The transaction's ``confirm`` callback: ask the user through MCP elicitation when the
    client can; False otherwise (then the caller must pass confirm=true, which the refusal tells
    the model to do only after asking)."""

    async def ask(question: str) -> bool:
        from server.errors import ConfirmationRequired

        try:
            await confirm_destructive(ctx, question, False)
        except ConfirmationRequired:
            return False
        return True

    return ask


def ask_user(ctx: Context, question: str | None) -> Any:
    """For a ``Resolve(...)`` resolver: ``Elicit(question)`` when there is something to confirm and
    the client can be asked (the SDK sends it mid-call on handshake protocols, as an
    InputRequiredResult on 2026-07-28), else ``None`` (then ``confirm=true`` is required)."""
    from mcp.server.mcpserver.resolve import Elicit

    if question and _can_elicit(ctx, back_channel_only=False):
        return Elicit(question, Confirmation)
    return None


def require_confirmation(answer: Any, question: str, confirm: bool) -> None:
    """Raise ConfirmationRequired unless the user accepted ``answer`` (an elicitation outcome), or,
    when the user was not asked (``answer`` None or accepted without data), ``confirm`` is true."""
    from server.errors import ConfirmationRequired

    data = getattr(answer, "data", None) if answer is not None else None
    asked = answer is not None and (getattr(answer, "action", None) != "accept" or data is not None)
    if asked:
        if getattr(answer, "action", None) == "accept" and getattr(data, "confirm", False):
            return
        raise ConfirmationRequired(
            f"the user did not confirm: {question}", state="nothing was changed",
            next_step="ask the user what they want instead",
        )
    if not confirm:
        raise ConfirmationRequired(
            f"confirmation required: {question}",
            state="nothing was changed",
            next_step="ask the user; if they agree, call again with confirm=true",
        )
    # The safety policy decides whether the model's confirm=true may stand in for a human.
    from server.safety.gate import FALLBACK, PolicyRefused

    # The gate asks the acts it knows as approvals bound to their plan (tools/_policy.py); this
    # catches a confirm no approval covered.
    if (fallback := FALLBACK.get()) != "model":
        raise PolicyRefused(
            f"{question} needs a human approval, this client cannot ask the user, and the safety policy's "
            f"fallback is {fallback}",
            state="nothing was changed",
            next_step="use a client that supports MCP elicitation, or a person makes the change by hand",
        )


def _can_elicit(ctx: Context, *, back_channel_only: bool) -> bool:
    try:
        capabilities = ctx.client_capabilities
        session = ctx.request_context.session
        back_channel = bool(session.can_send_request)
        version = ctx.protocol_version or ""
    except (ValueError, AttributeError):  # no request context (direct calls in tests)
        return False
    elicitation = capabilities.elicitation if capabilities is not None else None
    # A bare `elicitation: {}` means form mode; url-only clients cannot show our yes/no form.
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    return back_channel or (not back_channel_only and version >= "2026-07-28")
