"""Shared-memory segments (protocol/shared_memory.py): the codec's form, sharing, taking, mapping, holding, and
the scheduler's rules for them (who holds what, when; bytes for peers on other hosts)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from scaler_jupyter.errors import ProtocolError, SegmentLostError
from scaler_jupyter.protocol import (
    INLINE_LIMIT,
    PROTOCOL_VERSION,
    Assign,
    ClientHello,
    Kind,
    Payload,
    PutObjects,
    ReleaseSegments,
    Segment,
    Status,
    TaskResult,
    TaskSpec,
    WorkerHello,
    decode,
    encode,
    serialization,
    shared_memory,
)
from scaler_jupyter.protocol.messages import ObjectSpec
from tests.unit.scheduler_harness import CLIENT, FN, W1, Scheduler, assigned, messages, ok, results, spec

pytestmark = pytest.mark.skipif(not shared_memory.available(), reason="needs Linux memfd segments")

SENDER = """
import sys
from scaler_jupyter.protocol import Payload, shared_memory
holder = shared_memory.SegmentHolder()
segment = holder.share(Payload([bytes(range(256)) * 1024])).parts[0]
print(segment.pid, segment.fd, segment.inode, segment.size, flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def sender():
    """Another process holding one 256 KiB segment until its stdin closes."""
    process = subprocess.Popen([sys.executable, "-c", SENDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    try:
        yield process, Segment(*map(int, process.stdout.readline().split()))
    finally:
        process.stdin.close()
        process.wait(10)


def test_a_segment_travels_as_four_numbers():
    message = PutObjects([ObjectSpec(b"o" * 16, Payload([b"stream", Segment(12, 7, 34138, 1 << 20)]))])
    frames = encode(message)
    assert len(frames) == 1  # no frame of bytes: the part stays in shared memory
    assert decode([bytes(frames[0])]) == message


@pytest.mark.parametrize("part", [[1, 2, 3], [1, 2, 3, -4], [1, 2, 3, True], [1, 2, 3, "4"]])
def test_a_malformed_segment_is_a_protocol_error(part):
    import msgpack
    with pytest.raises(ProtocolError):
        decode([msgpack.packb([Kind.PUT_OBJECTS, [[b"o" * 16, [b"stream", part]]]])])


def test_large_parts_are_shared_and_small_ones_stay_bytes():
    holder = shared_memory.SegmentHolder()
    payload = serialization.dumps((np.arange(INLINE_LIMIT // 8), np.arange(10)))
    shared = holder.share(payload)
    assert [type(p) is Segment for p in shared.parts] == [False, True, False]
    assert shared.nbytes == payload.nbytes and len(holder) == 1 and holder.nbytes == INLINE_LIMIT
    big, small = serialization.loads(shared)
    assert np.array_equal(big, np.arange(INLINE_LIMIT // 8)) and np.array_equal(small, np.arange(10))
    holder.release(shared_memory.inodes(shared))
    assert len(holder) == 0 and holder.nbytes == 0
    with pytest.raises(SegmentLostError):  # its last fd is closed: gone
        shared_memory.map_segment(shared.parts[1])


def test_every_load_gets_a_private_copy_on_write_view():
    holder = shared_memory.SegmentHolder()
    shared = holder.share(serialization.dumps(np.zeros(INLINE_LIMIT)))
    first, second = serialization.loads(shared), serialization.loads(shared)
    assert first.flags.writeable
    first[:] = 1.0
    assert second.sum() == 0.0 and serialization.loads(shared).sum() == 0.0
    holder.release_all()
    assert first.sum() == INLINE_LIMIT  # a mapping outlives every fd of its segment


def test_past_its_budget_a_holder_leaves_parts_as_bytes():
    holder = shared_memory.SegmentHolder(budget=0)
    payload = Payload([b"x" * INLINE_LIMIT])
    assert holder.share(payload) is payload and len(holder) == 0


def test_the_scheduler_takes_a_segment_and_keeps_it_after_the_sender_dies(sender):
    process, segment = sender
    holder = shared_memory.SegmentHolder()
    taken = holder.take(Payload([b"stream", segment]), lambda pid: pid == process.pid)
    own = taken.parts[1]
    assert (own.pid, own.inode, own.size) == (os.getpid(), segment.inode, segment.size)
    process.stdin.close()
    process.wait(10)
    assert bytes(shared_memory.map_segment(own)) == bytes(range(256)) * 1024
    holder.retain(taken)
    holder.drop(taken)
    assert len(holder) == 1
    holder.drop(taken)
    assert len(holder) == 0


def test_a_segment_is_taken_only_from_the_process_allowed_to_hand_it(sender):
    process, segment = sender
    holder = shared_memory.SegmentHolder()
    with pytest.raises(SegmentLostError):
        holder.take(Payload([b"stream", segment]), lambda pid: False)
    with pytest.raises(SegmentLostError):  # an fd of the right process that is not that segment
        holder.take(Payload([b"stream", Segment(process.pid, 0, segment.inode, segment.size)]), lambda pid: True)
    assert len(holder) == 0


def test_a_segment_whose_sender_died_is_lost(sender):
    process, segment = sender
    process.stdin.close()
    process.wait(10)
    with pytest.raises(SegmentLostError):
        shared_memory.SegmentHolder().take(Payload([b"stream", segment]), lambda pid: True)


def test_host_id_names_this_boot_namespaces_and_user():
    host = shared_memory.host_id()
    assert host and f"uid:{os.getuid()}" in host
    assert str(os.stat("/proc/self/ns/net").st_ino) in host


# ---------------------------------------------------------------------------
# The scheduler's rules for segments (a SchedulerState, no sockets; the sender is a real process)


def _scheduler_with(sender_pid: int, client_host: str, worker_host: str) -> Scheduler:
    sched = Scheduler()
    sched.send(CLIENT, ClientHello(PROTOCOL_VERSION, "c", "host", sender_pid, True, client_host))
    sched.send(W1, WorkerHello(PROTOCOL_VERSION, "w", "host", os.getpid(), 1, [], worker_host))
    sched.flush()
    return sched


def test_the_scheduler_takes_a_client_s_segment_and_forwards_its_own(sender):
    process, segment = sender
    sched = _scheduler_with(process.pid, shared_memory.host_id(), shared_memory.host_id())
    task = TaskSpec(0, FN, Payload([b"stream", segment]), [], None, [], 0, None)
    out = sched.submit(CLIENT, task)
    assert messages(out, CLIENT, ReleaseSegments) == [ReleaseSegments([segment.inode])]
    [assign] = messages(out, W1, Assign)
    forwarded = assign.tasks[0].args.parts[1]
    assert (forwarded.pid, forwarded.inode) == (os.getpid(), segment.inode)
    assert sched.snapshot()["scheduler"]["segments"] == 1
    process.stdin.close()
    process.wait(10)  # the client's hold is gone; the scheduler's keeps the segment for the task
    assert bytes(shared_memory.map_segment(forwarded)) == bytes(range(256)) * 1024
    sched.report(W1, ok(0))
    assert sched.snapshot()["scheduler"]["segments"] == 0


def test_a_worker_on_another_host_gets_bytes(sender):
    process, segment = sender
    sched = _scheduler_with(process.pid, shared_memory.host_id(), "another-host")
    out = sched.submit(CLIENT, TaskSpec(0, FN, Payload([b"stream", segment]), [], None, [], 0, None))
    [assign] = messages(out, W1, Assign)
    assert bytes(assign.tasks[0].args.parts[1]) == bytes(range(256)) * 1024
    assert len(encode(assign)) == 2  # the part travels as a frame of its own
    sched.report(W1, ok(0))  # the task ends: the scheduler lets go of the segment (this process's fd of it)
    assert sched.snapshot()["scheduler"]["segments"] == 0


def test_a_segment_from_a_client_on_another_host_fails_its_task(sender):
    process, segment = sender
    sched = _scheduler_with(process.pid, "another-host", shared_memory.host_id())
    out = sched.submit(CLIENT, TaskSpec(0, FN, Payload([b"stream", segment]), [], None, [], 0, None))
    assert results(out)[0].status == Status.SERIALIZATION
    assert messages(out, CLIENT, ReleaseSegments)  # the client may let go all the same
    assert sched.snapshot()["scheduler"]["segments"] == 0


def test_a_result_segment_is_held_until_its_client_has_mapped_it(sender):
    process, segment = sender  # a child of this process: as a processor is of its worker's agent
    sched = _scheduler_with(process.pid, shared_memory.host_id(), shared_memory.host_id())
    sched.submit(CLIENT, spec(0))
    out = sched.report(W1, TaskResult(0, Status.OK, Payload([b"stream", segment]), "", [0.1, 0.1, 1]))
    assert messages(out, W1, ReleaseSegments) == [ReleaseSegments([segment.inode])]
    assert results(out)[0].payload.parts[1].pid == os.getpid()
    assert sched.snapshot()["scheduler"]["segments"] == 1
    sched.send(CLIENT, ReleaseSegments([segment.inode]))
    assert sched.snapshot()["scheduler"]["segments"] == 0


def test_a_result_whose_segment_is_gone_runs_again(sender):
    process, segment = sender
    sched = _scheduler_with(process.pid, shared_memory.host_id(), shared_memory.host_id())
    sched.submit(CLIENT, spec(0))
    process.stdin.close()
    process.wait(10)  # its processor died before the scheduler read the result
    out = sched.report(W1, TaskResult(0, Status.OK, Payload([b"stream", segment]), "", [0.1, 0.1, 1]))
    assert not results(out) and assigned(out) == {W1: [0]}
