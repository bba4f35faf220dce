"""The one exception tree of the product.

Every message is written for the calling model and says three things: what happened, the
state things are in now, and what to call next. Tools turn these into MCP tool errors; any
other exception is a bug and is reported as one (without leaking its text).
"""

from __future__ import annotations


class DsmError(Exception):
    """Base class. ``str(err)`` is the full, model-facing message."""

    def __init__(self, what: str, *, state: str = "", next_step: str = "") -> None:
        self.what = what
        self.state = state
        self.next_step = next_step
        super().__init__(self.render())

    def restate(self, state: str, next_step: str | None = None) -> DsmError:
        """The same error with a new State (and Next): for an error raised after something changed,
        whose own state ("nothing was changed") described only the step that raised it."""
        self.state = state
        if next_step is not None:
            self.next_step = next_step
        self.args = (self.render(),)
        return self

    def render(self) -> str:
        parts = [self.what.rstrip(".") + "."]
        if self.state:
            parts.append("State: " + self.state.rstrip(".") + ".")
        if self.next_step:
            parts.append("Next: " + self.next_step.rstrip(".") + ".")
        return " ".join(parts)


class SettingsError(DsmError):
    """A configuration value from the environment is unusable; start-up stops."""


class PathRejected(DsmError):
    """A path argument is outside the stacks root, a symlink out of it, or looks like a flag."""


class StackNotFound(DsmError):
    """No stack directory or compose file matches the argument."""


class StackConflict(DsmError):
    """Two stack directories claim the same Compose project name."""


class UnsafeYaml(DsmError):
    """YAML refused before parsing completed: too large, too deep, too many aliases, not text."""

    def __init__(self, what: str, *, line: int | None = None, column: int | None = None, **kw: str) -> None:
        self.line = line
        self.column = column
        super().__init__(what, **kw)


class ComposeError(DsmError):
    """``docker compose`` failed; carries the argv (redacted), exit code and stderr."""

    def __init__(self, what: str, *, argv: list[str], returncode: int | None, stderr: str, **kw: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(what, **kw)


class ComposeTimeout(ComposeError):
    """``docker compose`` ran past its timeout and was killed with its whole process group."""


class ComposeUnavailable(DsmError):
    """No Compose v2 (plugin or binary) could be found."""


class DockerUnavailable(DsmError):
    """The Docker engine cannot be reached (not installed, daemon dead, bad DOCKER_HOST)."""


class EngineError(DsmError):
    """The engine answered with an error to an API call."""


class ReadOnlyMode(DsmError):
    """A changing operation was asked for while DSM_READ_ONLY is set."""


class BackupNotFound(DsmError):
    """No backup with that id exists for the stack (or its manifest is unreadable)."""


class BackupFailed(DsmError):
    """Taking, restoring or verifying a backup failed; the message says which part and why."""


class ConfirmationRequired(DsmError):
    """A destructive act was asked for without the user's confirmation."""


class StackBusy(DsmError):
    """Another operation holds the stack's lock (in this or another server process).

    Tools answer it as ``status: busy`` with the holder named, not as an error: the caller polls
    ``operation_status(operation_id)`` instead of starting a second deploy.
    """

    def __init__(self, stack: str, *, operation_id: str, kind: str, started_at: str, pid: int) -> None:
        self.stack = stack
        self.operation_id = operation_id
        self.kind = kind
        self.started_at = started_at
        self.pid = pid
        if operation_id == "unknown":  # the holder had not named itself yet (it is starting)
            super().__init__(
                f"stack {stack!r} is busy: another operation is just starting on it",
                state="nothing was changed by this call",
                next_step="call stack_history for its operation_id in a few seconds, then poll operation_status",
            )
            return
        super().__init__(
            f"stack {stack!r} is busy: {kind} operation {operation_id} (started {started_at}, server pid {pid}) "
            "is still running",
            state="nothing was changed by this call",
            next_step=f"poll operation_status('{operation_id}') until it ends, then decide whether to retry",
        )


class OperationNotFound(DsmError):
    """No operation with that id in the journal (never existed, or compacted away long ago)."""


class BadMaintenanceWindow(DsmError):
    """The ``until`` of a maintenance window is not an ISO 8601 time in the future."""
