"""Host pre-flight: what validate_compose and check_resources know about the live host.

The lint rules (:mod:`server.policy`) are pure; this package gathers the facts they need
(:mod:`.facts`, with :mod:`.images`, :mod:`.ports` and :mod:`.usage`) and builds the two
reports (:mod:`.reports`): :mod:`.validation` for validate_compose, :mod:`.resources` for
check_resources. Nothing is imported here: tools import the report models at start-up and
the machinery only when a check runs.
"""

