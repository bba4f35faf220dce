"""Host pre-flight: what validate_compose and check_resources know about the live host.

The lint rules (:mod:`server.policy`) are pure; this package gathers the facts they need
(:mod:`.facts`, with :mod:`.images`, :mod:`.ports` and :mod:`.usage`) and builds the two
reports (:mod:`.reports`): :mod:`.validation` for validate_compose, :mod:`.resources` for
check_resources. The names other modules use are re-exported here.
"""

from __future__ import annotations

from server.preflight.facts import HostSnapshot, gather_facts
from server.preflight.images import REGISTRY_TIMEOUT_S, image_fact
from server.preflight.parallel import run_parallel
from server.preflight.progress import Progress
from server.preflight.reports import (
    ContainerUsage,
    HostResources,
    ResourceReport,
    ResourceRequest,
    ServiceRequest,
    ValidationReport,
)
from server.preflight.resources import RESOURCE_RULES, check_resources
from server.preflight.usage import CPU_SAMPLE_S, usage_from_stats
from server.preflight.validation import source_context, validate

__all__ = [
    "CPU_SAMPLE_S",
    "REGISTRY_TIMEOUT_S",
    "RESOURCE_RULES",
    "ContainerUsage",
    "HostResources",
    "HostSnapshot",
    "Progress",
    "ResourceReport",
    "ResourceRequest",
    "ServiceRequest",
    "ValidationReport",
    "check_resources",
    "gather_facts",
    "image_fact",
    "run_parallel",
    "source_context",
    "usage_from_stats",
    "validate",
]
