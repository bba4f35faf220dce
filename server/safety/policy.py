"""The operator's safety policy (``DSM_POLICY``): a YAML file the server enforces.

The file is validated at start-up (a bad one stops the server with one line naming the key,
through :class:`SettingsError` like any other configuration error) and re-read when it changes
(a cheap stat on each mutating call). A file that becomes invalid while the server runs makes
every change refused until a person fixes it: failing closed is the only safe reading.

Without ``DSM_POLICY`` the policy is :data:`DEFAULT` and the server behaves as it always did
(``DSM_READ_ONLY`` sets ``mode: read_only``, nothing else).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from server.errors import SettingsError

Mode = Literal["read_write", "non_destructive", "read_only"]
Fallback = Literal["model", "deny", "out_of_band"]
Protection = Literal["never", "approve"]
MUTATING_TOOLS = ("deploy_stack", "update_stack", "scale_service", "rollback", "stack_control", "backup_stack")
Act = Literal[
    "deploy", "rollback", "rollback_data", "start", "stop", "restart", "remove", "maintenance_on",
    "maintenance_off", "create", "restore", "prune",
]
DESTRUCTIVE_ACTS: frozenset[str] = frozenset({"restore", "remove", "rollback_data", "prune"})
"""What ``mode: non_destructive`` refuses: acts that lose data or take a stack away."""
_MAX_BYTES = 256 * 1024


class ApproveRule(BaseModel):
    """One ``approve`` entry: the acts it matches need a human approval. Every field given must
    match; an entry with none matches every change."""

    model_config = ConfigDict(extra="forbid")
    tool: Literal["deploy_stack", "update_stack", "scale_service", "rollback", "stack_control", "backup_stack",
                  "*"] = "*"
    acts: list[Act] | None = None
    stacks: list[str] | None = Field(default=None, description="stack names or globs")
    critical: bool | None = Field(default=None, description="only stacks whose x-dsm says critical (or not)")

    def matches(self, tool: str, act: str, names: tuple[str, ...], critical: bool) -> bool:
        if self.tool not in ("*", tool):
            return False
        if self.acts is not None and act not in self.acts:
            return False
        if self.stacks is not None and not any(fnmatchcase(n, g) for n in names for g in self.stacks):
            return False
        return self.critical is None or self.critical == critical


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Mode = "read_write"
    protected: dict[str, Protection] = Field(default_factory=dict)
    approve: list[ApproveRule] = Field(default_factory=list)
    registries: list[str] | None = None
    """Allowed image registries (``docker.io``, ``ghcr.io``, ``localhost:5000``); None = any."""
    fallback: Fallback = "model"
    approval_ttl_s: int = Field(default=600, ge=30, le=86400)
    """How long a human approval stays usable (seconds); it is single-use and bound to one plan anyway."""

    @field_validator("protected")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value:
            if not pattern.strip():
                raise ValueError("a protected stack name is empty")
        return value

    @field_validator("registries")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = []
        for host in value:
            clean = host.strip().lower().rstrip("/")
            if not clean or "/" in clean or " " in clean:
                raise ValueError(f"{host!r} is not a registry host (e.g. docker.io, ghcr.io, localhost:5000)")
            out.append("docker.io" if clean in ("index.docker.io", "registry-1.docker.io") else clean)
        return out

    def protection(self, names: tuple[str, ...]) -> tuple[str, Protection] | None:
        """The strictest ``protected`` entry matching any of ``names``: (pattern, never|approve)."""
        hits = [(p, v) for p, v in self.protected.items() if any(fnmatchcase(n, p) for n in names)]
        hits.sort(key=lambda hit: hit[1] != "never")
        return hits[0] if hits else None


DEFAULT = Policy()


@dataclass(frozen=True)
class Loaded:
    policy: Policy
    source: str
    """Where it came from, for refusals: 'DSM_POLICY=/etc/dsm/policy.yaml' or 'default'."""


def parse(text: str, source: str) -> Policy:
    """Validate a policy document; SettingsError with one line naming the key and why."""
    from server.errors import UnsafeYaml
    from server.yamlsafe import load_yaml

    try:
        data = load_yaml(text, source, max_bytes=_MAX_BYTES).data if text.strip() else {}
    except UnsafeYaml as exc:
        raise SettingsError(f"{source}: not valid YAML: {exc.what}", next_step="fix the file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: must be a mapping of keys (mode, protected, approve, registries, fallback, "
                            "approval_ttl_s)")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        why = err["msg"].replace("\n", " ")
        if err["type"] == "extra_forbidden":
            why = "unknown key (known: mode, protected, approve, registries, fallback, approval_ttl_s)"
        raise SettingsError(f"{source}: key {key!r}: {why}",
                            next_step="fix the file, see README 'Safety policy'") from None


def read(path: Path) -> Policy:
    source = f"DSM_POLICY={path}"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"{source}: cannot be read ({exc.strerror})",
                            next_step="fix the path or unset it") from None
    if len(raw) > _MAX_BYTES:
        raise SettingsError(f"{source}: larger than {_MAX_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise SettingsError(f"{source}: not UTF-8 text") from None
    return parse(text, source)


class PolicySource:
    """The current policy of one server: the file re-read when its mtime or size changed."""

    def __init__(self, path: Path | None, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._current: Loaded | None = None

    def current(self) -> Loaded:
        """The policy in force. Raises SettingsError when the file is (now) unusable."""
        if self.path is None:
            return self._force(Loaded(DEFAULT, "default"))
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if self._current is None or stamp is None or stamp != self._stamp:
                self._current = None
                self._current = Loaded(read(self.path), f"DSM_POLICY={self.path}")
                self._stamp = stamp
            return self._force(self._current)

    def _force(self, loaded: Loaded) -> Loaded:
        # DSM_READ_ONLY is a shortcut for mode: read_only, whatever the file says.
        if self.read_only and loaded.policy.mode != "read_only":
            return Loaded(loaded.policy.model_copy(update={"mode": "read_only"}), "DSM_READ_ONLY")
        return loaded
