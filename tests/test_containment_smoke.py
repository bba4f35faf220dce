"""Smoke checks fetch http(s) only, and every check ends within its timeout whatever it reads.

On main an x-dsm smoke ``http: file:///etc/shadow`` validated GO and was opened by urllib (its
existence answered), and a ``file://`` FIFO hung the deploy forever with the stack's lock held.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from server.deploy import smoke
from server.xdsm import SmokeCheck, XdsmInvalid, parse_service_settings
from tests.conftest import write_stack

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("url", ["file:///etc/shadow", "ftp://example.com/x", "gopher://h/", "http:///nohost",
                                 "/etc/passwd", "data:,hello"])
def test_xdsm_refuses_a_smoke_url_that_is_not_http(url: str) -> None:
    with pytest.raises(XdsmInvalid, match="http:// or https://"):
        parse_service_settings("web", {"smoke": [{"http": url}]})


def test_xdsm_accepts_http_and_https() -> None:
    ok = parse_service_settings("web", {"smoke": [{"http": "http://web:8080/h"}, {"http": "HTTPS://example.com"}]})
    assert len(ok.smoke) == 2


async def test_validate_compose_says_no_go_for_a_file_url(mcp_client: Any, stacks_root: Path) -> None:
    write_stack(stacks_root, "shadow", "services:\n  web:\n    image: busybox:1\n    x-dsm:\n"
                "      smoke: [{http: 'file:///etc/shadow'}]\n")
    result = await mcp_client.call_tool("validate_compose", {"path": "shadow", "check_host": False})
    report = result.structured_content
    assert report["go"] is False, report
    assert [f["rule"] for f in report["findings"]] == ["xdsm-invalid"]
    assert "file:///etc/shadow" in report["findings"][0]["message"]


def _stack() -> Any:
    return SimpleNamespace(services={"web": {}}, name="s")


async def test_a_file_url_is_refused_at_run_time_too(tmp_path: Path) -> None:
    """Checked again when the check runs (a SmokeCheck built without validation, a FIFO behind it)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for url in (f"file://{fifo}", "file:///etc/passwd"):
        check = SmokeCheck.model_construct(http=url, exec=None, expect_status=200, expect_exit=0, timeout_s=2.0)
        with anyio.fail_after(3):
            result = await smoke._one(None, _stack(), "web", check, {}, None)  # type: ignore[arg-type]
        assert not result.ok and "refused" in result.detail, result


def _server(handler: Any) -> tuple[int, threading.Event]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handler, args=(conn, stop), daemon=True).start()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], stop


def _drip(conn: socket.socket, stop: threading.Event) -> None:
    """Answers one header byte every 0.2 s, forever: each read is quick, the whole never ends."""
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.is_set():
        try:
            conn.sendall(b"a")
        except OSError:
            break
        time.sleep(0.2)
    conn.close()


def _redirect_to_ftp(conn: socket.socket, stop: threading.Event) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/etc/passwd\r\nContent-Length: 0\r\n\r\n")
    conn.close()


async def test_a_slow_drip_answer_is_cut_at_the_timeout() -> None:
    port, stop = _server(_drip)
    try:
        check = SmokeCheck(http=f"http://127.0.0.1:{port}/", timeout_s=1.0)
        started = time.monotonic()
        with anyio.fail_after(10):
            result = await smoke._one(None, _stack(), "web", check, {}, None)  # type: ignore[arg-type]
        assert time.monotonic() - started < 4
        assert not result.ok and "did not finish within 1s" in result.detail
    finally:
        stop.set()


async def test_a_redirect_out_of_http_is_not_followed() -> None:
    port, stop = _server(_redirect_to_ftp)
    try:
        check = SmokeCheck(http=f"http://127.0.0.1:{port}/", timeout_s=2.0, expect_status=200)
        with anyio.fail_after(5):
            result = await smoke._one(None, _stack(), "web", check, {}, None)  # type: ignore[arg-type]
        assert not result.ok and "HTTP 302" in result.detail, result
    finally:
        stop.set()


async def test_a_failing_exec_keeps_the_last_meaningful_lines_of_its_output() -> None:
    """psql ends its error with a caret line: the ERROR line itself must be in the evidence."""
    stderr = ('ERROR:  column "title" does not exist\nLINE 1: SELECT title FROM items\n'
              "               ^\n\n" + "x" * 5000)
    psql = 'psql: warning\nERROR:  column "title" does not exist\nLINE 1: SELECT title FROM items\n               ^\n'

    class Engine:
        def __init__(self, out: str) -> None:
            self.out = out

        async def exec_stream(self, container: str, argv: list[str], *, timeout_s: float) -> Any:
            return SimpleNamespace(timed_out=False, exit_code=1, stdout="", stderr=self.out)

    check = SmokeCheck(exec=["psql", "-c", "SELECT title FROM items"])
    result = await smoke._one(Engine(psql), _stack(), "web", check, {"web": "c1"}, None)  # type: ignore[arg-type]
    assert not result.ok and result.detail == (
        'exit 1, expected 0: psql: warning | ERROR:  column "title" does not exist | LINE 1: SELECT title FROM items')
    # Bounded whatever the output: three lines of at most 160 characters.
    result = await smoke._one(Engine(stderr), _stack(), "web", check, {"web": "c1"}, None)  # type: ignore[arg-type]
    assert result.detail.endswith("x" * 160) and len(result.detail) < 3 * 160 + 40
    assert smoke.last_lines("  a \n\n b\n^\n c  \n d\n") == "b | c | d"
