"""Real SSH servers for the SSHCluster tests: Debian's sshd, started here with its own host key, authorized key
and configuration in a temporary folder, listening on a free loopback port.

The remote processes of an SSHCluster are then descendants of the sshd this test run started, so the suite's
leftover-process check sees any that outlive their cluster. Needs root (sshd logs a user in only as root,
or as itself) and ``/usr/sbin/sshd`` (``make test`` installs openssh-server); skipped, with the reason, without.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_until

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 20.0


def skip_reason() -> str | None:
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing: apt-get install -y openssh-server (make test does)"
    if os.geteuid() != 0:
        return f"the test sshd logs in as root only when run by root (running as uid {os.geteuid()})"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is missing: apt-get install -y openssh-client"
    return None


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True,
                   timeout=30)
    return path


@dataclasses.dataclass
class Sshd:
    """One running sshd: where it listens, and the options with which asyncssh logs in to it."""

    host: str
    port: int
    process: subprocess.Popen
    client_key: Path
    known_hosts: Path

    @property
    def destination(self) -> str:
        return f"{self.host}:{self.port}"

    def options(self, **overrides) -> dict:
        return {"username": "root", "client_keys": [str(self.client_key)], "known_hosts": str(self.known_hosts),
                **overrides}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class SshdFactory:
    """Starts sshd servers sharing one host key and one authorized client key; stops them all at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.host_key = keygen(folder / "host_key")
        self.client_key = keygen(folder / "client_key")
        self.stranger_key = keygen(folder / "stranger_key")  # a key no server authorizes
        (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
        self.servers: list[Sshd] = []

    def start(self, host: str = "127.0.0.1", port: int | None = None, prefix: tuple[str, ...] = ()) -> Sshd:
        """An sshd on ``host:port`` (a free port by default); ``prefix`` runs it elsewhere (``ip netns exec NS``)."""
        port = port or free_port()
        config = self.folder / f"sshd_config_{host}_{port}"
        config.write_text(f"""Port {port}
ListenAddress {host}
HostKey {self.host_key}
AuthorizedKeysFile {self.folder}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
MaxStartups 100
MaxSessions 20
LogLevel ERROR
""")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        known = self.folder / f"known_hosts_{host}_{port}"
        public = (self.folder / "host_key.pub").read_text().split()
        known.write_text(f"[{host}]:{port} {public[0]} {public[1]}\n")
        with open(self.folder / f"sshd_{host}_{port}.log", "w") as log:
            process = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(config)], stdout=log,
                                       stderr=subprocess.STDOUT)
        server = Sshd(host, port, process, self.client_key, known)
        self.servers.append(server)
        if not prefix:
            wait_until(lambda: process.poll() is not None or _accepts(host, port), START_TIMEOUT,
                       f"sshd to listen on {host}:{port}")
            if process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.folder / f'sshd_{host}_{port}.log').read_text()}")
        return server

    def ssh_config(self, servers: list[Sshd]) -> Path:
        """An OpenSSH client config for ``servers``: root, the authorized key, their host key (as `--ssh-config`)."""
        known = self.folder / "known_hosts_all"
        known.write_text("".join(server.known_hosts.read_text() for server in servers))
        config = self.folder / "ssh_config"
        config.write_text(f"""Host {' '.join(sorted({server.host for server in servers}))}
  User root
  IdentityFile {self.client_key}
  UserKnownHostsFile {known}
""")
        return config

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def sshd_factory(tmp_path_factory):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    factory = SshdFactory(tmp_path_factory.mktemp("sshd"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def sshd(sshd_factory) -> Sshd:
    """One sshd on 127.0.0.1."""
    return sshd_factory.start()
