"""``docker-stack-mcp approve CODE`` / ``deny CODE``: a person decides an out-of-band approval.

``approve`` shows the plan the agent's call would carry out and asks y/N on the terminal; it
refuses when stdin is not a terminal, so a pipe (``yes | docker-stack-mcp approve``) cannot stand in
for the person. The limit, stated in the README: an agent with a shell on this host as the same
user can run this command in a pseudo-terminal itself; out-of-band approval protects agents
without such a shell. This is a command for a person, not the MCP server: it speaks on stdout.
"""

from __future__ import annotations

import getpass
import socket
import sys

from server.errors import DsmError
from server.safety.approvals import ApprovalStore, now
from server.settings import Settings


def decide(settings: Settings, code: str, *, yes: bool) -> int:
    store = ApprovalStore(settings.state_dir)
    code = code.strip().upper()
    found = store.get(code)
    if found is None:
        print(f"docker-stack-mcp: no approval {code!r} in {store.root}", file=sys.stderr)
        return 2
    if yes and not sys.stdin.isatty():
        print("docker-stack-mcp approve: stdin is not a terminal; a person approves at a terminal "
              "(nothing was approved)", file=sys.stderr)
        return 2
    left = found.expires - now()
    print(f"Approval {found.code}: {found.tool} ({found.act}) on stack {found.stack!r}, plan {found.plan_id[:12]}")
    print(f"Status: {found.status}; expires in {max(int(left), 0)} s")
    print()
    print(found.question)
    print()
    by = f"{_user()}@{socket.gethostname()}"
    if yes:
        try:
            answer = input("Approve exactly this? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            yes = False
            print("Not approved.")
    try:
        decided = store.decide(code, yes=yes, by=by)
    except DsmError as exc:
        print(f"docker-stack-mcp: {exc}", file=sys.stderr)
        return 1
    if decided.status == "approved":
        print(f"Approved by {by}. The agent may now call {found.tool} again with approval='{code}' "
              f"(once, within {max(int(left), 0)} s, and only while the plan stays the same).")
    else:
        print(f"Denied by {by}: the agent's call with approval='{code}' will be refused.")
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in a container
        import os

        return f"uid{os.getuid()}"
