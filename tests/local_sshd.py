"""A private sshd on a free loopback port, for ssh:// engine tests (Debian's openssh-server, which
scripts/provision.sh installs; it is never started as a system service).

Its key pair and host key are generated for the test; the one authorised key logs in as this user
with ``DOCKER_HOST`` set to the engine the test names (``environment=`` in authorized_keys), so
``docker system dial-stdio`` run over ssh reaches that engine. The ssh *client* must use this
sshd's config, not the user's: OpenSSH reads ``~/.ssh`` from the password database, not $HOME, so
a two-line ``ssh`` on PATH adds ``-F <config>`` and runs the real client.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.deploy_helpers import free_port

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class LocalSshd:
    url: str  # ssh://user@127.0.0.1:PORT
    path: str  # PATH with the config-adding ssh first


@contextlib.contextmanager
def local_sshd(directory: Path, docker_host: str) -> Iterator[LocalSshd]:
    if not os.access(SSHD, os.X_OK):
        raise AssertionError(f"{SSHD} is missing: run scripts/provision.sh (it installs openssh-server)")
    directory.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / key)], check=True,
                       timeout=30, capture_output=True)
    public = (directory / "id_ed25519.pub").read_text().strip()
    (directory / "authorized_keys").write_text(f'environment="DOCKER_HOST={docker_host}" {public}\n')
    port = free_port()
    user = getpass.getuser()
    (directory / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\nPermitUserEnvironment yes\nStrictModes no\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"UsePAM no\nPidFile {directory / 'sshd.pid'}\n")
    (directory / "ssh_config").write_text(
        f"Host 127.0.0.1\n  IdentityFile {directory / 'id_ed25519'}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    real = shutil.which("ssh") or "/usr/bin/ssh"
    shim = bin_dir / "ssh"
    shim.write_text(f'#!/bin/sh\nexec {real} -F {directory / "ssh_config"} "$@"\n')
    shim.chmod(0o755)
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation directory (the package's unit makes it)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(directory / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=open(directory / "sshd.log", "wb"), start_new_session=True)  # noqa: SIM115
    try:
        path = f"{bin_dir}:{os.environ.get('PATH', '')}"
        deadline = time.monotonic() + 20
        while True:
            probe = subprocess.run([str(shim), "-p", str(port), f"{user}@127.0.0.1", "true"], capture_output=True,
                                   timeout=20)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"sshd did not accept the key: {(directory / 'sshd.log').read_text()[-800:]}")
            time.sleep(0.2)
        yield LocalSshd(url=f"ssh://{user}@127.0.0.1:{port}", path=path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
