"""Cluster keys: writing them, reading them, and who gets past the scheduler's handshake.

The socket tests here run in one process over 127.0.0.1, with the ZAP handler
driven by hand as the scheduler's loop drives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth

from scaler_jupyter import Client, LocalCluster
from scaler_jupyter.errors import KeysError
from scaler_jupyter.security import ClusterKeys, HandshakeWatch, ZapAuthenticator
from tests.helpers import raw_peer

FILES = ("scheduler.key", "scheduler.key_secret", "client.key", "client.key_secret")
WAIT = 5.0


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def contents(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in FILES}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scaler_jupyter", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    ClusterKeys.create(directory)
    return directory


# ---------------------------------------------------------------------------
# Writing keys


def test_a_key_set_is_written_owner_only(tmp_path):
    directory = tmp_path / "new" / "keys"
    keys = ClusterKeys.create(directory)
    assert sorted(p.name for p in directory.iterdir()) == sorted(FILES)  # and no staging leftovers
    assert mode(directory) == 0o700
    assert mode(directory / "scheduler.key_secret") == 0o600
    assert mode(directory / "client.key_secret") == 0o600
    public, secret = keys.check_scheduler().check_client().scheduler_pair
    assert keys.scheduler_public_key == public
    assert len(public) == len(secret) == 40  # Z85 of 32 bytes
    assert keys.client_pair[0] != public
    assert keys.allowed_client_keys == {keys.client_pair[0]}


def test_existing_keys_are_kept_unless_forced(keys_dir):
    before = contents(keys_dir)
    with pytest.raises(KeysError, match="--force"):
        ClusterKeys.create(keys_dir)
    assert contents(keys_dir) == before
    ClusterKeys.create(keys_dir, force=True)
    after = contents(keys_dir)
    assert all(after[name] != before[name] for name in FILES)
    assert mode(keys_dir / "scheduler.key_secret") == 0o600


def test_the_keys_command_refuses_to_overwrite_without_force(tmp_path):
    directory = tmp_path / "keys"
    written = run_cli("keys", str(directory))
    assert written.returncode == 0, written.stderr
    assert "--keys" in written.stdout  # it says how to use them
    before = contents(directory)
    refused = run_cli("keys", str(directory))
    assert refused.returncode != 0
    assert "already holds keys" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert contents(directory) == before
    forced = run_cli("keys", str(directory), "--force")
    assert forced.returncode == 0, forced.stderr
    assert contents(directory) != before


# ---------------------------------------------------------------------------
# Reading keys: what is missing is named, with what to do


def test_a_missing_directory_says_how_to_make_one(tmp_path):
    with pytest.raises(KeysError, match=r"does not exist.*scaler-jupyter keys"):
        ClusterKeys(tmp_path / "nowhere")


@pytest.mark.parametrize(("removed", "check"), [
    ("client.key_secret", "check_client"),
    ("scheduler.key", "check_client"),
    ("scheduler.key_secret", "check_scheduler"),
    ("client.key", "check_scheduler"),
])
def test_a_missing_file_is_named(keys_dir, removed, check):
    (keys_dir / removed).unlink()
    with pytest.raises(KeysError, match=rf"{removed} is missing \(needed by .*scaler-jupyter keys"):
        getattr(ClusterKeys(keys_dir), check)()


def test_each_role_needs_only_its_own_files(keys_dir):
    (keys_dir / "scheduler.key_secret").unlink()
    ClusterKeys(keys_dir).check_client()  # a worker's host does not need the scheduler's secret
    ClusterKeys.create(keys_dir, force=True)
    (keys_dir / "client.key_secret").unlink()
    ClusterKeys(keys_dir).check_scheduler()  # nor the scheduler's the clients'


def test_an_unreadable_key_file_is_reported(keys_dir):
    (keys_dir / "client.key_secret").write_text("not a certificate\n")
    with pytest.raises(KeysError, match=r"client\.key_secret"):
        ClusterKeys(keys_dir).check_client()


def test_the_scheduler_admits_every_public_key_in_its_directory_but_its_own(keys_dir, tmp_path):
    other = ClusterKeys.create(tmp_path / "alice")
    shutil.copy(other.directory / "client.key", keys_dir / "alice.key")
    keys = ClusterKeys(keys_dir)
    assert keys.allowed_client_keys == {keys.client_pair[0], other.client_pair[0]}
    assert keys.scheduler_pair[0] not in keys.allowed_client_keys


def test_missing_keys_fail_before_any_process_starts(tmp_path):
    with pytest.raises(KeysError, match="does not exist"):
        LocalCluster(n_workers=1, keys=tmp_path / "nowhere")
    with pytest.raises(KeysError, match="does not exist"):
        Client("tcp://127.0.0.1:1", keys=tmp_path / "nowhere")


def test_the_scheduler_command_reports_missing_keys_without_a_traceback(tmp_path):
    done = run_cli("scheduler", "tcp://127.0.0.1:0", "--keys", str(tmp_path / "nowhere"))
    assert done.returncode != 0
    assert "scaler-jupyter scheduler:" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------
# The handshake: ZAP answers and what a refused peer is told


def test_zap_admits_only_allowed_curve_keys():
    allowed_public, _ = zmq.curve_keypair()
    other_public, _ = zmq.curve_keypair()
    context = zmq.Context()
    zap = ZapAuthenticator(context, frozenset({allowed_public}))
    try:
        def ask(mechanism: bytes, *credentials: bytes) -> list[bytes]:
            return zap.answer([b"1.0", b"7", b"", b"127.0.0.1", b"", mechanism, *credentials])

        admitted = ask(b"CURVE", zmq.utils.z85.decode(allowed_public))
        assert admitted[:3] == [b"1.0", b"7", b"200"]
        assert admitted[4] == allowed_public  # the user id: which key it was
        assert ask(b"CURVE", zmq.utils.z85.decode(other_public))[2] == b"400"
        assert ask(b"NULL")[2] == b"400"
        assert ask(b"PLAIN", b"user", b"password")[2] == b"400"
        assert zap.answer([b"1.0"])[2] == b"400"  # malformed: denied, and still answered
        assert (zap.admitted, zap.denied) == (1, 4)
    finally:
        zap.close()
        context.term()


@contextlib.contextmanager
def keyed_server(keys: ClusterKeys) -> Iterator[tuple[str, zmq.Socket, ZapAuthenticator]]:
    context = zmq.Context()
    zap = keys.authenticator(context)
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    keys.serve(router)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield f"tcp://127.0.0.1:{port}", router, zap
    finally:
        router.close()
        zap.close()
        context.term()


def attempt(address: str, router: zmq.Socket, zap: ZapAuthenticator, keys: ClusterKeys | None,
            wait: float = WAIT) -> tuple:
    """Connect a DEALER with ``keys``, send one message; (what the server received, the watch's verdict)
    once the message arrives, the handshake fails for good, or ``wait`` is over."""
    with raw_peer(address, keys) as (dealer, watch):
        dealer.send(b"hello")
        received = None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and received is None and not watch.definite:
            zap.handle()
            watch.read()
            if router.poll(10):
                received = router.recv_multipart()[-1]
        time.sleep(0.1)  # a message that would arrive late, arrives now
        zap.handle()
        if received is None and router.poll(0):
            received = router.recv_multipart()[-1]
        return received, watch.failure, watch.definite


def test_only_a_peer_with_the_cluster_s_client_keys_gets_through(keys_dir, tmp_path):
    keys = ClusterKeys(keys_dir)
    other = ClusterKeys.create(tmp_path / "other")
    # the scheduler's public key alone is not enough: a key pair of one's own is refused by ZAP
    knows_public = tmp_path / "knows-public"
    knows_public.mkdir()
    shutil.copy(keys_dir / "scheduler.key", knows_public / "scheduler.key")
    shutil.copy(other.directory / "client.key_secret", knows_public / "client.key_secret")
    with keyed_server(keys) as (address, router, zap):
        assert attempt(address, router, zap, keys) == (b"hello", None, False)

        received, failure, definite = attempt(address, router, zap, ClusterKeys(knows_public))
        assert received is None and definite
        assert "not one of the cluster's" in failure

        received, failure, definite = attempt(address, router, zap, None)
        assert received is None and definite
        assert "requires keys" in failure

        received, failure, definite = attempt(address, router, zap, other, wait=1.0)  # it retries forever
        assert received is None
        assert "not the one it runs with" in failure
        assert zap.denied == 1  # only the peer that could complete the encryption reached ZAP
        assert zap.admitted == 1


def test_a_keyed_peer_is_told_when_the_scheduler_has_no_keys(keys_dir):
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    ClusterKeys(keys_dir).connect(dealer)
    watch = HandshakeWatch(dealer, keyed=True)
    try:
        dealer.connect(f"tcp://127.0.0.1:{port}")
        assert watch.socket.poll(WAIT * 1000)
        watch.read()
        assert watch.definite and "does not use keys" in watch.failure
    finally:
        watch.close()
        dealer.close()
        router.close()
        context.term()


def test_secret_files_are_never_group_or_world_readable_even_with_a_loose_umask(tmp_path):
    old = os.umask(0)
    try:
        ClusterKeys.create(tmp_path / "keys")
    finally:
        os.umask(old)
    assert mode(tmp_path / "keys" / "client.key_secret") == 0o600
    assert mode(tmp_path / "keys") == 0o700
