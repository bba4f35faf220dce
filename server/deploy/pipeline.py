"""The deploy pipeline's public face: ``Deployer(runtime, progress, confirm).deploy(...)`` /
``.rollback(...)``, used by tools/deploy.py, the watcher and the tests.

A Deployer is the Transaction (server/deploy/transaction.py) with the Compose executor
(server/deploy/compose_executor.py); another target plugs in as another executor.
"""

from __future__ import annotations

from server.deploy.compose_executor import ComposeExecutor
from server.deploy.health import GateResult
from server.deploy.steps import DEFAULT_VERIFY_S, Run, StepFailed
from server.deploy.transaction import Confirm, Progress, Transaction
from server.runtime import Runtime


class Deployer(Transaction):
    def __init__(self, runtime: Runtime, progress: Progress | None = None, confirm: Confirm | None = None) -> None:
        super().__init__(runtime, ComposeExecutor(runtime), progress, confirm)


__all__ = ["DEFAULT_VERIFY_S", "Deployer", "GateResult", "Run", "StepFailed"]
