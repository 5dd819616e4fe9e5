"""Messages over a byte stream between two processes of one machine: a pair of pipes (an agent and its
processors) or a connected Unix socket (a local cluster's links to its scheduler, ``unix_link.py``).

A round trip over a pipe or a Unix socket costs a few tens of microseconds where a ZeroMQ one
costs well over a hundred on a VM (each ZeroMQ hop wakes its I/O threads, the sender's and the
receiver's, beside the receiver), so the hops of one machine use plain file descriptors. A message
is the codec's frames behind a length prefix: ``u32 count``, ``count x u64 length``, then the
frames' bytes. A message's body is read straight into one buffer and its frames are slices of
it: no copy after the kernel's.

Both ends are non-blocking. Output that the descriptor cannot take yet waits in a queue
(``wants_write`` says so; the owner flushes when it is writable), so a busy peer never stalls
its sender. ``wait_readable``/``flush(block=True)`` give a processor the blocking behaviour it wants.
"""

from __future__ import annotations

import collections
import fcntl
import math
import os
import select
import stat
import struct
import time

from scaler_jupyter.protocol.busy_poll import BusyPoll

_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")
_MAX_FRAMES = 1 << 16
_MAX_IOV = 512
_READ_SIZE = 1 << 16


class ChannelClosed(Exception):
    """The other end closed its pipe (its process exited) or sent garbage."""


class ChannelCorrupt(ChannelClosed):
    """The other end sent bytes that are not a stream of messages: nothing more can be read from it."""


class Channel:
    """One pipe in, one pipe out."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        """Over two pipes, or one socket given twice."""
        self.read_fd, self.write_fd = read_fd, write_fd
        for fd in {read_fd, write_fd}:
            os.set_blocking(fd, False)
            _widen(fd)
        self._out: collections.deque[memoryview] = collections.deque()
        self._in = bytearray()  # bytes read but not yet parsed
        self._lengths: list[int] | None = None  # frame lengths of the message being read
        self._body: bytearray | None = None
        self._filled = 0
        self._readable: select.poll | None = None  # made on the first wait
        self._busy_poll = BusyPoll()

    # -- writing -------------------------------------------------------------

    @property
    def wants_write(self) -> bool:
        """True while queued output waits for the pipe to become writable."""
        return bool(self._out)

    def send(self, frames: list, block: bool = False) -> None:
        """Queue one message (the codec's frames) and write what the pipe takes now."""
        views = [memoryview(f).cast("B") for f in frames]
        header = _COUNT.pack(len(views)) + b"".join(_LENGTH.pack(v.nbytes) for v in views)
        self._out.append(memoryview(header))
        self._out.extend(views)
        self.flush(block)

    def flush(self, block: bool = False) -> None:
        """Write queued output; unless ``block``, stop where the pipe is full."""
        out = self._out
        while out:
            try:
                written = os.writev(self.write_fd, [out[i] for i in range(min(len(out), _MAX_IOV))])
            except BlockingIOError:
                if not block:
                    return
                select.select([], [self.write_fd], [])
                continue
            except OSError as exc:
                out.clear()
                raise ChannelClosed(str(exc)) from exc
            while written:
                head = out[0]
                if written >= head.nbytes:
                    written -= head.nbytes
                    out.popleft()
                else:
                    out[0] = head[written:]
                    written = 0

    def flush_until(self, deadline: float) -> None:
        """Write queued output, waiting for room until the monotonic ``deadline`` at most (a last word
        before closing, which a stuck peer must not turn into a hang); a closed end drops it."""
        try:
            self.flush()
            while self._out and (left := deadline - time.monotonic()) > 0:
                select.select([], [self.write_fd], [], left)
                self.flush()
        except ChannelClosed:
            self._out.clear()

    # -- reading -------------------------------------------------------------

    def wait_readable(self, timeout: float | None = None) -> bool:
        """Block until there is input (or ``timeout`` passes); while messages come quickly, poll a little
        first (``busy_poll.py``)."""
        if self._readable is None:
            self._readable = select.poll()
            self._readable.register(self.read_fd, select.POLLIN)
        timeout_ms = None if timeout is None else math.ceil(timeout * 1000)
        return bool(self._busy_poll.wait(self._readable.poll, timeout_ms))

    def receive(self) -> list[list[memoryview]]:
        """Read what the pipe holds now; return the messages completed, each a list of frames.

        Raise :class:`ChannelClosed` at the end of the stream, once every message before it was returned."""
        messages = []
        drained = False
        while True:
            message = self._parse()
            if message is not None:
                messages.append(message)
                continue
            if drained:
                return messages
            try:
                if self._body is not None:
                    wanted = len(self._body) - self._filled
                    n = os.readv(self.read_fd, [memoryview(self._body)[self._filled:]])
                    self._filled += n
                else:
                    wanted = _READ_SIZE
                    chunk = os.read(self.read_fd, _READ_SIZE)
                    n = len(chunk)
                    self._in += chunk
            except BlockingIOError:
                return messages
            except OSError as exc:  # a socket reset by its peer: an end like any other
                if messages:
                    return messages
                raise ChannelClosed(str(exc)) from exc
            if n == 0:
                if messages:  # what came before the end first; the next call, at the end still, raises
                    return messages
                raise ChannelClosed("the other end closed the channel")
            drained = n < wanted  # a short read took all there was: no second read only to hear "nothing"

    def _parse(self) -> list[memoryview] | None:
        """Advance over buffered bytes; return a message if one is complete."""
        if self._lengths is None:
            if len(self._in) < _COUNT.size:
                return None
            (count,) = _COUNT.unpack_from(self._in)
            if not 0 < count <= _MAX_FRAMES:
                raise ChannelCorrupt(f"corrupt channel: a message of {count} frames")
            end = _COUNT.size + count * _LENGTH.size
            if len(self._in) < end:
                return None
            self._lengths = [_LENGTH.unpack_from(self._in, _COUNT.size + i * _LENGTH.size)[0] for i in range(count)]
            del self._in[:end]
            total = sum(self._lengths)
            if len(self._in) >= total:  # small messages arrive whole: no second read
                self._body, self._in = self._in[:total], self._in[total:]
                self._filled = total
            else:
                self._body = bytearray(total)
                self._body[: len(self._in)] = self._in
                self._filled = len(self._in)
                self._in = bytearray()
        if self._filled < len(self._body):
            return None
        view, frames, start = memoryview(self._body), [], 0
        for length in self._lengths:
            frames.append(view[start : start + length])
            start += length
        self._lengths, self._body, self._filled = None, None, 0
        return frames

    def close(self) -> None:
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


def _widen(fd: int) -> None:
    """Grow a pipe's buffer to the system's limit (1 MiB by default, from 64 KiB): a 10 MB
    argument then crosses in ten wake-ups of each side instead of a hundred and sixty."""
    if stat.S_ISSOCK(os.fstat(fd).st_mode):
        return  # a local socket's buffers already hold a few hundred KB; large parts go by shared memory
    try:
        with open("/proc/sys/fs/pipe-max-size") as limit:
            size = int(limit.read())
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, ValueError, AttributeError):
        pass  # not Linux, or the limit is lower for us: the default size still works
