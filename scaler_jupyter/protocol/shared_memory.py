"""Large payload parts through shared memory between processes of one host.

**The segment.** A payload part of ``INLINE_LIMIT`` bytes or more becomes a Linux
``memfd``: written once, then sealed (it can never shrink, grow or change, so no holder
can pull pages from under another's mapping), and sent as a :class:`Segment`, four
numbers: the holder's pid, its fd, the segment's inode (its name while it lives,
whoever holds it) and its size. A receiver on the same host opens
``/proc/PID/fd/FD``, checks inode, size and seals, and maps it ``MAP_PRIVATE``: the
task (or caller) gets its array without a copy, writable, its writes private to it
(copy on write), so no other task or cached value ever sees them.

**Who holds a segment.** A memfd has no name in any file system: the kernel frees it
when its last fd and last mapping are gone. So a process that dies, even by
``kill -9``, leaves nothing behind, and freeing is only a matter of closing fds:

- the sender (a client for arguments and ``send_object`` data, a processor for
  results) holds what it sent until the scheduler says, with ``ReleaseSegments``,
  that it holds its own reference (it opened the segment on receipt);
- the scheduler holds each segment as long as it holds the payload: a task's
  arguments until the task ends, a stored object until it is collected, a result until
  its client says it has mapped it (the client maps on receipt, in its I/O thread);
- workers and clients map; a mapping lives as long as the arrays made from it.

When the sender dies before the scheduler took its segment, the segment is gone: a
client's tasks go with their client anyway, and a worker's result is run again. A
dead worker's queued tasks run elsewhere from the scheduler's own references.

**Same host** is :func:`host_id`: the boot, the network and pid namespaces and the
user. Peers that differ in any of these (another machine, a container, a worker in
another network namespace) move bytes over the sockets as before; the scheduler and
a worker's agent turn segments into bytes for them (:func:`materialize`).

CPython's ``mmap`` keeps a duplicate of the fd for every mapping (until Python 3.13's
``trackfd``), which would cost a caller one fd per result it keeps: mappings are made
through libc here, and unmapped when the last buffer on them is released.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import resource
import threading
import weakref
from collections.abc import Callable, Iterable

from scaler_jupyter.errors import SegmentLostError
from scaler_jupyter.protocol.messages import INLINE_LIMIT, Payload, Segment, part_nbytes

__all__ = ["SegmentHolder", "available", "held_by", "host_id", "inodes", "map_segment", "materialize", "parent_pid",
           "raise_fd_limit"]

NAME = "scaler-jupyter"  # what a memfd is called in /proc/PID/fd and /proc/PID/maps: "/memfd:scaler-jupyter"
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL if hasattr(
    fcntl, "F_SEAL_SHRINK") else 0
_FD_SHARE = 4  # at most this fraction of the open-file limit is spent holding segments; beyond it, bytes


def available() -> bool:
    """True where segments can be made and opened across processes (Linux, with memfd and seals)."""
    return hasattr(os, "memfd_create") and _SEALS != 0 and _libc is not None and os.path.isdir("/proc/self/fd")


def host_id() -> str:
    """Who may open this process's segments: the same boot, network and pid namespaces, and user; "" where
    segments cannot be shared. Read for the calling thread (a thread may have joined another namespace)."""
    if not available():
        return ""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            boot_id = boot.read().strip()
        net = os.stat("/proc/thread-self/ns/net").st_ino
        pid = os.stat("/proc/thread-self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot_id}/net:{net}/pid:{pid}/uid:{os.getuid()}"


def raise_fd_limit() -> None:
    """Let this process (the scheduler) hold as many segments as the system allows it: soft limit to hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def inodes(payload: Payload | None) -> list[int]:
    """The inodes of the segments in ``payload``."""
    if payload is None:
        return []
    for part in payload.parts:  # most payloads have none: no list is built for them
        if type(part) is Segment:
            return [p.inode for p in payload.parts if type(p) is Segment]
    return []


def parent_pid(pid: int) -> int | None:
    """The parent of process ``pid`` (a worker's processor's is its agent), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def held_by(pid: int) -> int:
    """How many fds and mappings of segments process ``pid`` holds (0 once it is gone): what tests and the
    ``kill -9`` benchmark check is left."""
    count = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(f"/memfd:{NAME}")
            except OSError:
                pass
        with open(f"/proc/{pid}/maps") as maps:
            count += sum(f"/memfd:{NAME}" in line for line in maps)
    except OSError:
        return 0
    return count


# ---------------------------------------------------------------------------
# Opening and mapping


def _open(segment: Segment) -> int:
    """An fd of ``segment``, checked to be it (not a reused fd number) and sealed; raise SegmentLostError."""
    path = f"/proc/{segment.pid}/fd/{segment.fd}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SegmentLostError(f"shared memory segment {segment.inode} of process {segment.pid} is gone: "
                               f"{exc.strerror}") from None
    try:
        stat = os.fstat(fd)
        if stat.st_ino != segment.inode or stat.st_size != segment.size:
            raise SegmentLostError(f"shared memory segment {segment.inode} of process {segment.pid} is gone "
                                   "(its fd now names another file)")
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS != _SEALS:
            raise SegmentLostError(f"{path} is not a sealed segment")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _owned_by(segment: Segment, may_hand: Callable[[int], bool]) -> bool:
    """Whether the sender may hand over this segment: it is ours (a memfd named so) and ``may_hand`` its pid."""
    if not may_hand(segment.pid):
        return False
    try:
        return os.readlink(f"/proc/{segment.pid}/fd/{segment.fd}").startswith(f"/memfd:{NAME}")
    except OSError:
        return False


def map_segment(segment: Segment):
    """A private, writable, copy-on-write mapping of ``segment``: a buffer, unmapped when the last view on it
    is released."""
    fd = _open(segment)
    try:
        return _map(fd, segment.size)
    finally:
        os.close(fd)


def _map(fd: int, size: int):
    address = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        errno = ctypes.get_errno()
        raise SegmentLostError(f"cannot map a shared memory segment of {size} bytes: {os.strerror(errno)}")
    buffer = (ctypes.c_ubyte * size).from_address(address)
    weakref.finalize(buffer, _libc.munmap, address, size)
    return buffer


def materialize(payload: Payload) -> tuple[Payload, list[int]]:
    """``payload`` with each segment replaced by a mapping of it (for a peer on another host, or a caller that
    maps on receipt), and the inodes of the segments mapped. A segment that cannot be mapped stays as it is:
    loading the payload then raises :class:`SegmentLostError`."""
    parts, mapped = [], []
    for part in payload.parts:
        if type(part) is Segment:
            try:
                parts.append(map_segment(part))
                mapped.append(part.inode)
                continue
            except SegmentLostError:
                pass
        parts.append(part)
    return Payload(parts), mapped


# ---------------------------------------------------------------------------
# Holding


class SegmentHolder:
    """The segments this process holds for others: an fd and a count of holds, by inode.

    Senders :meth:`share` parts (one hold each, released when the receiver says so); the
    scheduler :meth:`take`\\ s what it receives and counts the holds of its payloads
    (:meth:`retain`, :meth:`drop`). Past a budget of fds, parts stay bytes. Thread-safe.
    """

    def __init__(self, budget: int | None = None) -> None:
        if budget is None:
            budget = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // _FD_SHARE
        self.budget = budget
        self.pid = os.getpid()
        self.nbytes = 0
        self._held: dict[int, list[int]] = {}  # inode -> [fd, holds, size]
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def share(self, payload: Payload) -> Payload:
        """``payload`` with each part of ``INLINE_LIMIT`` bytes or more written to a segment this holder holds
        once; parts stay bytes when segments cannot be made (none left in the budget, no memory)."""
        parts = None
        for i, part in enumerate(payload.parts):
            if type(part) is Segment or part_nbytes(part) < INLINE_LIMIT:
                continue
            segment = self._create(part)
            if segment is None:
                break
            if parts is None:
                parts = list(payload.parts)
            parts[i] = segment
        return payload if parts is None else Payload(parts)

    def _create(self, data) -> Segment | None:
        view = memoryview(data).cast("B")
        if len(self._held) >= self.budget:
            return None
        try:
            fd = os.memfd_create(NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError:
            return None
        try:
            written = 0
            while written < view.nbytes:
                written += os.write(fd, view[written:])
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            inode = os.fstat(fd).st_ino
        except OSError:  # out of memory in the shm file system: bytes it is
            os.close(fd)
            return None
        self._hold(inode, fd, view.nbytes)
        return Segment(self.pid, fd, inode, view.nbytes)

    def take(self, payload: Payload, may_hand: Callable[[int], bool]) -> Payload:
        """``payload`` with every segment another process sent replaced by this holder's own reference to it,
        held once; past the budget the part is read into bytes instead. Only segments of ours (named so)
        held by a process ``may_hand`` accepts are taken. Raise :class:`SegmentLostError` if one is gone
        (nothing of ``payload`` is then held)."""
        parts, taken = list(payload.parts), []
        try:
            for i, part in enumerate(parts):
                if type(part) is not Segment or part.pid == self.pid:
                    continue
                if not _owned_by(part, may_hand):
                    raise SegmentLostError(f"process {part.pid} may not hand over segment {part.inode}")
                fd = _open(part)
                if len(self._held) >= self.budget:
                    try:
                        parts[i] = os.pread(fd, part.size, 0)
                    finally:
                        os.close(fd)
                    continue
                self._hold(part.inode, fd, part.size)
                taken.append(part.inode)
                parts[i] = Segment(self.pid, fd, part.inode, part.size)
        except BaseException:
            self.release(taken)
            raise
        return Payload(parts)

    def _hold(self, inode: int, fd: int, size: int) -> None:
        with self._lock:
            entry = self._held.get(inode)
            if entry is None:
                self._held[inode] = [fd, 1, size]
                self.nbytes += size
                return
            entry[1] += 1
        os.close(fd)  # held already (a segment sent twice): one fd is enough

    def retain(self, payload: Payload | None) -> None:
        """One more hold on each segment of ``payload`` this holder holds."""
        with self._lock:
            for inode in inodes(payload):
                entry = self._held.get(inode)
                if entry is not None:
                    entry[1] += 1

    def drop(self, payload: Payload | None) -> None:
        """One hold less on each segment of ``payload``; a segment is closed when none is left."""
        if payload is not None and self._held:
            self.release(inodes(payload))

    def release(self, released: Iterable[int]) -> None:
        """One hold less on each segment named by inode (unknown ones are ignored)."""
        closing = []
        with self._lock:
            for inode in released:
                entry = self._held.get(inode)
                if entry is None:
                    continue
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._held[inode]
                    self.nbytes -= entry[2]
                    closing.append(entry[0])
        for fd in closing:
            os.close(fd)

    def release_all(self) -> None:
        """Close every segment held (the peers they were held for are gone)."""
        with self._lock:
            held, self._held, self.nbytes = self._held, {}, 0
        for fd, _, _ in held.values():
            os.close(fd)


def _load_libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_libc = _load_libc()
