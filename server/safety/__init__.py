"""The operator's safety policy and the audit trail (issue 18).

- :mod:`server.safety.policy`: the DSM_POLICY file, its schema and re-reading;
- :mod:`server.safety.gate`: ``check(tool, stack, act)``, the one gate of every mutating tool;
- :mod:`server.safety.registries`: the pre-flight finding for images from registries not allowed;
- :mod:`server.safety.audit`: one JSON line per tool call, and its reader for ``docker-stack-mcp audit``.
- :mod:`server.safety.proposals`: what a person approves: a plan's id and the question showing it;
- :mod:`server.safety.approvals`: approvals bound to that plan (single-use, expiring), out-of-band codes;
- :mod:`server.safety.approvecli`: ``docker-stack-mcp approve CODE`` / ``deny CODE`` for a person.

Not :mod:`server.policy`: that package holds the compose lint rules.
"""
