"""The model download thread never writes to stdout (the protocol stream).

huggingface_hub print()s its lazy-import errors to stdout; at the end of a short session the
download thread was still importing it after the transport had given fd 1 back to the wire,
and the client read "Error importing huggingface_hub...: can't register atexit after shutdown"
as a broken JSON-RPC message.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from server.memory import embedding


def test_a_failing_hub_import_says_nothing_on_stdout(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    hub = types.ModuleType("huggingface_hub")

    def lazy(name: str) -> Any:
        print(f"Error importing huggingface_hub.{name}: can't register atexit after shutdown")
        raise RuntimeError("can't register atexit after shutdown")

    hub.__getattr__ = lazy  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    assert embedding._download() is False
    out, err = capsys.readouterr()
    assert out == "" and "Error importing" in err
