"""The CurveZMQ keys of a cluster: writing them, loading them, and putting them on sockets.

``scaler-jupyter keys DIR`` writes one key set (:meth:`ClusterKeys.create`):

- ``scheduler.key`` and ``scheduler.key_secret``: the scheduler's key pair. Its
  ROUTER socket and its monitor feed are CURVE servers with it.
- ``client.key`` and ``client.key_secret``: one pair shared by workers, clients
  and ``top``, whose sockets are CURVE clients with it.

Encryption alone would let in anyone who knows the scheduler's public key, so the
scheduler also answers ZAP requests (:class:`ZapAuthenticator`, polled in its own
loop): it admits only the public keys of the ``*.key`` files in DIR other than
``scheduler.key``. A peer without them fails the handshake, so nothing it sends
ever reaches the scheduler. To admit another key pair, put its public ``.key``
file in the scheduler's DIR; to revoke it, remove the file and restart the
scheduler.

What each host needs: the scheduler's host ``scheduler.key_secret`` and
``client.key``; every other host ``scheduler.key`` and ``client.key_secret``.
Copying the whole directory works everywhere.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import tempfile
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from scaler_jupyter.errors import KeysError

logger = logging.getLogger(__name__)

SCHEDULER = "scheduler"
CLIENT = "client"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
SECRET_MODE = 0o600
DIRECTORY_MODE = 0o700
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks, fixed by the ZAP specification (RFC 27)

_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_MECHANISM_MISMATCH = 0x11000002  # ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: one side has keys, the other none


_NEEDED_BY = {
    SCHEDULER + SECRET_SUFFIX: "the scheduler",
    SCHEDULER + PUBLIC_SUFFIX: "workers, clients and top",
    CLIENT + SECRET_SUFFIX: "workers, clients and top",
    CLIENT + PUBLIC_SUFFIX: "the scheduler",
}


def _files(name: str) -> tuple[str, str]:
    return name + PUBLIC_SUFFIX, name + SECRET_SUFFIX


class ClusterKeys:
    """The key set in one directory, as written by ``scaler-jupyter keys DIR``.

    Files are read when first needed and then kept; ``check_scheduler`` and
    ``check_client`` read what a role needs at once, so that a missing file is
    reported when a process starts rather than when it first connects.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory).expanduser().resolve()
        if not self.directory.is_dir():
            raise KeysError(f"the keys directory {self.directory} does not exist: "
                            f"create a key set with `scaler-jupyter keys {directory}`")

    @classmethod
    def create(cls, directory: str | os.PathLike, force: bool = False) -> ClusterKeys:
        """Write a new key set in ``directory`` (created, owner-only, if missing); refuse to
        replace existing keys unless ``force``."""
        path = Path(directory).expanduser()
        names = [f for name in (SCHEDULER, CLIENT) for f in _files(name)]
        existing = [name for name in names if (path / name).exists()]
        if existing and not force:
            raise KeysError(f"{path} already holds keys ({', '.join(existing)}): replacing them locks out every "
                            "peer holding the old ones; pass --force (force=True) to do it anyway")
        if path.exists() and not path.is_dir():
            raise KeysError(f"{path} is not a directory")
        try:
            cls._write(path, names)
        except OSError as exc:
            raise KeysError(f"cannot write keys in {path}: {exc.strerror or exc}") from None
        logger.info("wrote a cluster key set in %s", path)
        return cls(path)

    @staticmethod
    def _write(path: Path, names: list[str]) -> None:
        if not path.exists():
            path.mkdir(mode=DIRECTORY_MODE, parents=True)
            path.chmod(DIRECTORY_MODE)  # mkdir's mode is masked by the umask
        # Written in a private (0700) directory, made owner-only there, then moved in:
        # a secret key is never readable by others, not even for an instant.
        staging = Path(tempfile.mkdtemp(prefix=".keys-", dir=path))
        try:
            for name in (SCHEDULER, CLIENT):
                zmq.auth.create_certificates(staging, name)
            for name in names:
                (staging / name).chmod(SECRET_MODE if name.endswith(SECRET_SUFFIX) else 0o644)
            for name in names:
                os.replace(staging / name, path / name)
        finally:
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()

    # -- reading ---------------------------------------------------------------

    def _load(self, filename: str, secret: bool) -> tuple[bytes, bytes | None]:
        path = self.directory / filename
        if not path.is_file():
            raise KeysError(f"{path} is missing (needed by {_NEEDED_BY.get(filename, 'the scheduler')}): copy it "
                            "from the directory `scaler-jupyter keys` wrote, or write a new key set with "
                            f"`scaler-jupyter keys {self.directory}`")
        if secret and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("%s is readable by other users than its owner: chmod 600 it", path)
        try:
            public, secret_key = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise KeysError(f"cannot read the key file {path} ({exc}): write a new key set with "
                            f"`scaler-jupyter keys --force {self.directory}`") from None
        if secret and secret_key is None:
            raise KeysError(f"{path} holds no secret key: it should be the file `scaler-jupyter keys` wrote")
        return public, secret_key

    @functools.cached_property
    def scheduler_pair(self) -> tuple[bytes, bytes]:
        """The scheduler's (public, secret) keys, Z85-encoded."""
        return self._load(SCHEDULER + SECRET_SUFFIX, secret=True)

    @functools.cached_property
    def scheduler_public_key(self) -> bytes:
        """The scheduler's public key, which a client checks the scheduler against."""
        return self._load(SCHEDULER + PUBLIC_SUFFIX, secret=False)[0]

    @functools.cached_property
    def client_pair(self) -> tuple[bytes, bytes]:
        """The (public, secret) keys that workers, clients and ``top`` present."""
        return self._load(CLIENT + SECRET_SUFFIX, secret=True)

    @functools.cached_property
    def allowed_client_keys(self) -> frozenset[bytes]:
        """The public keys the scheduler admits: those of every ``*.key`` file but its own."""
        names = [path.name for path in sorted(self.directory.glob("*" + PUBLIC_SUFFIX))
                 if path.name != SCHEDULER + PUBLIC_SUFFIX]
        if not names:
            self._load(CLIENT + PUBLIC_SUFFIX, secret=False)  # raises the error that says what to do
        return frozenset(self._load(name, secret=False)[0] for name in names)

    def check_scheduler(self) -> ClusterKeys:
        """Read what a scheduler needs now; raise :class:`KeysError` if anything is missing."""
        _ = self.scheduler_pair, self.allowed_client_keys
        return self

    def check_client(self) -> ClusterKeys:
        """Read what a worker, client or ``top`` needs now; raise :class:`KeysError` if anything is missing."""
        _ = self.scheduler_public_key, self.client_pair
        return self

    # -- sockets ---------------------------------------------------------------

    def serve(self, socket: zmq.Socket) -> None:
        """Make ``socket`` (before it binds) a CURVE server with the scheduler's keys."""
        public, secret = self.scheduler_pair
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True

    def connect(self, socket: zmq.Socket) -> None:
        """Make ``socket`` (before it connects) a CURVE client of the scheduler, with the client keys."""
        public, secret = self.client_pair
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_serverkey = self.scheduler_public_key

    def authenticator(self, context: zmq.Context) -> ZapAuthenticator:
        """The ZAP handler admitting :attr:`allowed_client_keys`; create it before any socket binds."""
        return ZapAuthenticator(context, self.allowed_client_keys)

    def __repr__(self) -> str:
        return f"<ClusterKeys {self.directory}>"


def load_keys(directory: str | os.PathLike | None) -> ClusterKeys | None:
    """The key set of a peer (worker, client, ``top``), checked now; None for a cluster without keys."""
    return None if directory is None else ClusterKeys(directory).check_client()


class ZapAuthenticator:
    """Answers libzmq's ZAP requests for a context, in the caller's loop: ``socket`` is to be polled,
    :meth:`handle` called when it is readable.

    A CURVE peer whose public key is allowed is admitted; every other request is
    denied. (pyzmq's ``ThreadAuthenticator`` would do the same on a thread of its
    own with an asyncio loop; the scheduler is one thread, and this is a few lines.)
    """

    def __init__(self, context: zmq.Context, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed
        self.admitted = self.denied = 0
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)

    def handle(self) -> None:
        """Answer every waiting request."""
        while self.socket.get(zmq.EVENTS) & zmq.POLLIN:
            self.socket.send_multipart(self.answer(self.socket.recv_multipart()))

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The reply to one ZAP request (RFC 27): status 200 for an allowed CURVE key, else 400."""
        request_id = request[1] if len(request) > 1 else b""
        if len(request) < 6 or request[0] != b"1.0":
            self.denied += 1
            logger.warning("malformed ZAP request: denied")
            return [b"1.0", request_id, b"400", b"malformed request", b"", b""]
        address, mechanism, credentials = request[3], request[5], request[6:]
        if mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
            key = z85.encode(credentials[0])
            if key in self.allowed:
                self.admitted += 1
                return [b"1.0", request_id, b"200", b"OK", key, b""]
        self.denied += 1
        logger.warning("refused a peer at %s (mechanism %s): it holds none of this cluster's client keys",
                       address.decode(errors="replace"), mechanism.decode(errors="replace"))
        return [b"1.0", request_id, b"400", b"this key is not one of the cluster's", b"", b""]

    def close(self) -> None:
        self.socket.close()


class HandshakeWatch:
    """Why a connecting socket's security handshake failed, read from its monitor events.

    Poll :attr:`socket`; :meth:`read` then returns a failure's explanation, or None.
    ``definite`` says whether the failure will repeat on every retry (a refused key,
    keys on one side only), so the caller may give up at once.
    """

    def __init__(self, socket: zmq.Socket, keyed: bool) -> None:
        self.keyed = keyed
        self.failure: str | None = None  # the last failure since the last success
        self.definite = False
        self._watched = socket
        self.socket = socket.get_monitor_socket(_HANDSHAKE_EVENTS)

    def read(self) -> str | None:
        """Apply waiting events; the explanation of a new failure, or None."""
        new = None
        while self.socket.get(zmq.EVENTS) & zmq.POLLIN:
            event = parse_monitor_message(self.socket.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.failure, self.definite = None, False
                continue
            explanation, definite = self._explain(event["event"], event["value"])
            if self.definite and not definite:  # a vaguer failure of a retry does not hide the clear one
                continue
            if explanation != self.failure:
                new = explanation
            self.failure, self.definite = explanation, definite
        return new

    def _explain(self, event: int, value: int) -> tuple[str, bool]:
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return ("the scheduler refused this peer's key: it is not one of the cluster's (use the keys "
                    "directory the scheduler was started with)", True)
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
            if self.keyed:
                return "the scheduler does not use keys, but this peer was given some: drop the keys", True
            return ("the scheduler requires keys: pass the directory `scaler-jupyter keys` wrote "
                    "(--keys DIR, or Client(address, keys=DIR))", True)
        if self.keyed:
            return ("the security handshake failed: the scheduler's key in the keys directory is not the one "
                    "it runs with (another key set?)", False)
        return ("the handshake with the scheduler failed: does it require keys? Then pass the directory "
                "`scaler-jupyter keys` wrote (--keys DIR, or Client(address, keys=DIR))", False)

    def close(self) -> None:
        self._watched.disable_monitor()
        self.socket.close()
