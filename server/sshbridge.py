"""ssh:// engines for docker-py through the docker CLI's own ssh transport.

docker-py's ssh support needs paramiko, which this project does not ship, and it would read the
user's ssh setup differently from the docker CLI and Compose. Instead the Engine of an ssh://
target talks to a private unix socket; every connection to it is one ``docker -H ssh://...
system dial-stdio``: the docker CLI opens the ssh session (the user's ~/.ssh config, keys and
agent, exactly as Compose does for the same endpoint) and relays the engine's API over it.
The socket lives in a 0700 temporary directory; it is removed, and every relay ended, on close.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Mapping

from server.process import StreamProcess, end_stream_process, open_stream_process

log = logging.getLogger("docker_stack_mcp.sshbridge")

_CHUNK = 64 * 1024
_ABANDONED_GRACE_S = 10.0


def _end_if_running(proc: StreamProcess) -> None:
    if proc.poll() is None:  # never signal a group whose leader was already reaped (its pid may be reused)
        end_stream_process(proc, grace_s=1.0)
_ENGINE_VARS = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_TLS", "DOCKER_CERT_PATH")


class SshBridge:
    """A unix socket relaying each connection to ``url`` (ssh://user@host[:port])."""

    def __init__(self, url: str, env: Mapping[str, str] | None = None) -> None:
        self.url = url
        base = dict(os.environ if env is None else env)
        self._env = {k: v for k, v in base.items() if k not in _ENGINE_VARS}  # -H alone names the engine
        self._docker = shutil.which("docker", path=self._env.get("PATH")) or "docker"
        self._dir = tempfile.mkdtemp(prefix="dsm-ssh-")
        self.path = os.path.join(self._dir, "engine.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(16)
        self._closed = False
        self._lock = threading.Lock()
        self._relays: set[StreamProcess] = set()
        threading.Thread(target=self._accept, name="ssh-bridge", daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._relay, args=(conn,), name="ssh-relay", daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        argv = [self._docker, "-H", self.url, "system", "dial-stdio"]
        try:
            proc = open_stream_process(argv, self._env)
        except OSError as exc:
            log.warning("cannot start the docker CLI for %s: %s", self.url, exc)
            conn.close()
            return
        with self._lock:
            self._relays.add(proc)
        upstream = threading.Thread(target=self._to_engine, args=(conn, proc), daemon=True)
        upstream.start()
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(_CHUNK):  # type: ignore[attr-defined]
                conn.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            end_stream_process(proc)
            if proc.returncode not in (0, None, -15) and proc.stderr is not None:
                with contextlib.suppress(OSError, ValueError):
                    why = proc.stderr.read(2000).decode("utf-8", "replace").strip()
                    if why:
                        log.warning("ssh relay to %s ended: %s", self.url, why.splitlines()[-1])
            conn.close()
            with self._lock:
                self._relays.discard(proc)

    @staticmethod
    def _to_engine(conn: socket.socket, proc: StreamProcess) -> None:
        stdin = proc.stdin
        assert stdin is not None
        try:
            while chunk := conn.recv(_CHUNK):
                stdin.write(chunk)
                stdin.flush()
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()  # the engine side sees EOF: dial-stdio ends the ssh session
            # The client is gone, so nothing the engine could still say is wanted. A session still
            # connecting (a host that drops packets) would otherwise live until ssh gives up, one
            # process per abandoned connection: end it after a grace.
            timer = threading.Timer(_ABANDONED_GRACE_S, _end_if_running, args=(proc,))
            timer.daemon = True
            timer.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            relays = list(self._relays)
        for proc in relays:
            end_stream_process(proc, grace_s=1.0)
        shutil.rmtree(self._dir, ignore_errors=True)
