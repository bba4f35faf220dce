"""The policy's ``registries``: an image pulled from a registry not listed is a pre-flight error.

Added after the stack's own x-dsm policy is applied (server/preflight/validation.py): the
operator's policy is not the stack author's to waive. References are split as the docker CLI
does (:func:`server.registry.parse_reference`: ``redis`` comes from ``docker.io``).
"""

from __future__ import annotations

from server.errors import SettingsError
from server.models import Finding
from server.policy.catalog import finding
from server.registry import parse_reference
from server.settings import Settings
from server.stackmodel import LoadedStack


def registry_findings(settings: Settings, stack: LoadedStack) -> list[Finding]:
    from server.safety.gate import current

    try:
        loaded = current(settings)
    except SettingsError:
        return []  # an unusable policy refuses every change at the gate, with its reason
    allowed = loaded.policy.registries
    if allowed is None:
        return []
    out: list[Finding] = []
    for name, svc in sorted(stack.services.items()):
        image = (svc or {}).get("image")
        if not image or "build" in (svc or {}):
            continue  # built here: the tag is local, nothing is pulled
        registry = parse_reference(str(image)).registry.lower()
        if registry in allowed:
            continue
        out.append(finding(
            "image-registry-not-allowed",
            f"image {image!r} comes from registry {registry!r}, which the safety policy does not allow "
            f"(allowed: {', '.join(allowed) or 'none'}; {loaded.source})",
            service=name,
            line=stack.line_of(name, "image"),
            fix=f"use an image from an allowed registry (mirror it to {allowed[0]})" if allowed
            else "a person adds the registry to the policy's registries",
        ))
    return out
