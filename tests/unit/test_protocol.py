"""The wire codec: every message round-trips, large parts travel as frames, garbage is a ProtocolError."""

from __future__ import annotations

import copy
import dataclasses
import random

import msgpack
import pytest
import zmq

from scaler_jupyter.errors import ProtocolError
from scaler_jupyter.protocol import (
    INLINE_LIMIT,
    PROTOCOL_VERSION,
    GraphTask,
    Kind,
    ObjectSpec,
    OutputLine,
    Payload,
    PutObjects,
    Results,
    Submit,
    TaskResult,
    TaskSpec,
    decode,
    encode,
)
from scaler_jupyter.protocol import messages as wire_messages
from scaler_jupyter.protocol.messages import Status

FUNCTION_ID = b"f" * 16
OBJECT_ID = b"o" * 16
SERIALIZER_ID = b"s" * 16


def full_spec() -> TaskSpec:
    return TaskSpec(7, FUNCTION_ID, Payload([b"args", b"buffer"]), [OBJECT_ID], SERIALIZER_ID, ["gpu"], 3, 5,
                    [OBJECT_ID], "In [4]: x = simulate(3)", "simulate")


def bare_spec() -> TaskSpec:
    return TaskSpec(8, FUNCTION_ID, Payload([b"args"]), [], None, [], -1, None)


def message_types() -> dict[str, type]:
    """Every message type of the wire: the records that carry a ``KIND``."""
    return {cls.__name__: cls for cls in vars(wire_messages).values() if isinstance(cls, type) and hasattr(cls, "KIND")}


# One sample per message type, with every optional field both set and unset somewhere.
_SAMPLES = {
    "ClientHello": lambda cls: cls(PROTOCOL_VERSION, "client", "host", 123, True),
    "ClientWelcome": lambda cls: cls(3, 1.0),
    "ClientBye": lambda cls: cls(),
    "Submit": lambda cls: cls([ObjectSpec(FUNCTION_ID, Payload([b"function"]))], [full_spec(), bare_spec()]),
    "SubmitGraph": lambda cls: cls(2, "total", [ObjectSpec(FUNCTION_ID, Payload([b"function"]))],
                                   [bare_spec(), full_spec()],
                                   [GraphTask(8, "('x', 0)", [], False), GraphTask(7, "total", [8], True)]),
    "PutObjects": lambda cls: cls([ObjectSpec(OBJECT_ID, Payload([b"stream", b"buffer"]))]),
    "DeleteObjects": lambda cls: cls([OBJECT_ID]),
    "Cancel": lambda cls: cls([1, 2, 3]),
    "Results": lambda cls: cls([TaskResult(7, Status.OK, Payload([b"result"]), "", [0.5, 0.25, 1 << 20]),
                                TaskResult(8, Status.CANCELLED, None, "cancelled", [])]),
    "Output": lambda cls: cls([OutputLine(7, "stdout", "hello\n"), OutputLine(7, "stderr", "oops\n")]),
    "StatusRequest": lambda cls: cls(9),
    "StatusReply": lambda cls: cls(9, {"version": 1, "workers": [{"name": "w", "cpu": 1.5}], "tasks": {"pending": 0}}),
    "WorkerHello": lambda cls: cls(PROTOCOL_VERSION, "worker", "host", 456, 2, ["gpu", "highmem"]),
    "WorkerWelcome": lambda cls: cls(4),
    "WorkerBye": lambda cls: cls(),
    "Heartbeat": lambda cls: cls(12.5, 1 << 30, 3, 1),
    "Assign": lambda cls: cls([ObjectSpec(FUNCTION_ID, Payload([b"function"]))], [full_spec()]),
    "TaskBlocked": lambda cls: cls(7),
    "Shutdown": lambda cls: cls("the cluster stops"),
    "Rejected": lambda cls: cls("submit before hello"),
    "TakeBack": lambda cls: cls([11, 12]),
    "TakenBack": lambda cls: cls([12]),
    "TaskWarning": lambda cls: cls("2 tasks wait for a worker with tags ['gpu']", [5, 6]),
    "ReleaseSegments": lambda cls: cls([34138, 34139]),
}


def samples() -> list:
    """A sample of every message type the codec knows."""
    return [make(message_types()[name]) for name, make in _SAMPLES.items() if name in message_types()]


def wire(message) -> list[bytes]:
    """The frames of ``message`` as they arrive from a socket: plain bytes."""
    return [bytes(memoryview(frame)) for frame in encode(message)]


def header_of(message) -> list:
    return msgpack.unpackb(wire(message)[0], raw=False)


def pack(header: list) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def assert_protocol_error_or_message(frames) -> None:
    """Decoding garbage either yields a well-formed message or raises ProtocolError: never anything else."""
    try:
        message = decode(frames)
    except ProtocolError:
        return
    assert type(message) in MESSAGE_TYPES
    encoded = wire(message)  # what decodes is well-typed: it encodes again, to the same thing
    assert wire(decode(encoded)) == encoded


MESSAGE_TYPES = {type(m) for m in samples()}


# ---------------------------------------------------------------------------
# Round trips


def test_samples_cover_every_message_kind():
    assert set(message_types()) <= set(_SAMPLES), "a message type without a sample here"
    assert {m.KIND for m in samples()} == set(Kind)


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message):
    decoded = decode(wire(message))
    assert type(decoded) is type(message)
    assert decoded == message


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_round_trip_from_zmq_frames(message):
    """The engine decodes zero-copy ``zmq.Frame`` objects, not bytes."""
    frames = [zmq.Frame(frame) for frame in wire(message)]
    assert decode(frames) == message


def test_header_starts_with_the_kind():
    for message in samples():
        assert header_of(message)[0] == message.KIND


def test_small_parts_travel_inline():
    small = b"x" * (INLINE_LIMIT - 1)
    message = PutObjects([ObjectSpec(OBJECT_ID, Payload([small, b"y"]))])
    assert len(encode(message)) == 1
    assert decode(wire(message)).objects[0].payload.parts == [small, b"y"]


def test_large_parts_travel_as_their_own_frames():
    big = bytes(range(256)) * (INLINE_LIMIT // 256)  # exactly INLINE_LIMIT bytes
    assert len(big) == INLINE_LIMIT
    message = PutObjects([ObjectSpec(OBJECT_ID, Payload([b"stream", big]))])
    frames = encode(message)
    assert len(frames) == 2
    assert frames[1] is big  # zero-copy: the part itself is the frame
    assert len(frames[0]) < INLINE_LIMIT  # the header does not carry it
    decoded = decode(wire(message))
    assert decoded == message
    assert bytes(decoded.objects[0].payload.parts[1]) == big


def test_many_large_parts_keep_their_places():
    parts = [bytes([i]) * (INLINE_LIMIT + i) for i in range(3)]
    specs = [
        TaskSpec(1, FUNCTION_ID, Payload([b"a", parts[0]]), [], None, [], 0, None),
        TaskSpec(2, FUNCTION_ID, Payload([parts[1], b"b", parts[2]]), [], None, [], 0, None),
    ]
    message = Submit([ObjectSpec(OBJECT_ID, Payload([b"small"]))], specs)
    frames = wire(message)
    assert len(frames) == 4
    decoded = decode(frames)
    assert decoded == message
    assert [bytes(p) for p in decoded.tasks[1].args.parts] == [parts[1], b"b", parts[2]]


def test_buffer_parts_of_any_type_are_encoded():
    array = bytearray(b"z" * (INLINE_LIMIT * 2))
    message = Results([TaskResult(1, Status.OK, Payload([memoryview(b"stream"), bytearray(b"small"),
                                                          memoryview(array)]), "", [])])
    decoded = decode(wire(message))
    assert [bytes(p) for p in decoded.results[0].payload.parts] == [b"stream", b"small", bytes(array)]


# ---------------------------------------------------------------------------
# Malformed input: always ProtocolError


@pytest.mark.parametrize("frames", [
    [],
    [b""],
    [b"\xc1"],  # a byte msgpack never uses
    [pack(5)],
    [pack("SUBMIT")],
    [pack({"kind": 4})],
    [pack([])],
    [pack(None)],
    [None],
    [12345],
    ["not bytes"],
], ids=repr)
def test_headers_that_are_not_a_message(frames):
    with pytest.raises(ProtocolError):
        decode(frames)


@pytest.mark.parametrize("kind", [0, 999, -1, 2**40, True, False, 1.0, "4", b"\x04", None, [4]], ids=repr)
def test_unknown_kind(kind):
    with pytest.raises(ProtocolError):
        decode([pack([kind, 1])])


def test_wrong_field_count():
    with pytest.raises(ProtocolError):
        decode([pack([Kind.TASK_BLOCKED])])
    with pytest.raises(ProtocolError):
        decode([pack([Kind.TASK_BLOCKED, 1, 2])])
    with pytest.raises(ProtocolError):
        decode([pack([Kind.CLIENT_BYE, "extra"])])
    spec_wire = header_of(Submit([], [bare_spec()]))[2][0]
    with pytest.raises(ProtocolError):
        decode([pack([Kind.SUBMIT, [], [spec_wire[:-1]]])])


@pytest.mark.parametrize("header", [
    [Kind.TASK_BLOCKED, True],
    [Kind.STATUS_REQUEST, False],
    [Kind.WORKER_WELCOME, True],
    [Kind.CLIENT_HELLO, True, "client", "host", 1, True],  # version
    [Kind.CLIENT_HELLO, PROTOCOL_VERSION, "client", "host", True, True],  # pid
    [Kind.HEARTBEAT, 1.0, True, 0, 0],  # memory
    [Kind.HEARTBEAT, True, 0, 0, 0],  # cpu: a float field takes ints, never bools
    [Kind.CLIENT_WELCOME, 1, True],
], ids=lambda h: f"{Kind(h[0]).name}")
def test_bool_is_not_an_int(header):
    with pytest.raises(ProtocolError):
        decode([pack(header)])


def test_bool_is_not_an_int_inside_records():
    header = header_of(Submit([], [bare_spec()]))
    for index in (0, 6):  # task_id, priority
        bad = copy.deepcopy(header)
        bad[2][0][index] = True
        with pytest.raises(ProtocolError):
            decode([pack(bad)])
    bad = copy.deepcopy(header)
    bad[2][0][7] = True  # parent_id: an int or None
    with pytest.raises(ProtocolError):
        decode([pack(bad)])


def test_bool_is_not_a_frame_index():
    header = [Kind.PUT_OBJECTS, [[OBJECT_ID, [True]]]]
    with pytest.raises(ProtocolError):
        decode([pack(header), b"frame one"])


@pytest.mark.parametrize("index", [0, 2, 99, -1, 2**63], ids=repr)
def test_payload_frame_index_out_of_range(index):
    header = [Kind.PUT_OBJECTS, [[OBJECT_ID, [b"inline", index]]]]
    with pytest.raises(ProtocolError):
        decode([pack(header), b"frame one"])


def test_payload_frame_index_in_range_is_accepted():
    header = [Kind.PUT_OBJECTS, [[OBJECT_ID, [b"inline", 1]]]]
    message = decode([pack(header), b"frame one"])
    assert [bytes(p) for p in message.objects[0].payload.parts] == [b"inline", b"frame one"]


# Values of the wrong type for a field, by the type of the field's sample value.
# (None is wrong too, except in the fields declared optional.)
_WRONG_FOR = {
    bool: [1, 0, "true", 1.0, b"\x01", [True], None],
    int: ["1", b"1", 1.5, [1], {"a": 1}, True, False, None],
    float: ["1.0", b"1", [1.0], {"a": 1.0}, True, None],
    str: [1, b"text", ["text"], {"a": "b"}, True, 1.5, None],
    bytes: ["text", 1, [b"x"], {"a": b"b"}, True, 1.5, None],
    list: ["text", 1, b"x", {"a": 1}, True, 1.5, None],
    dict: [[], "text", 1, b"x", True, 1.5, None],
}
_WRONG_PAYLOAD = ["text", 1, b"x", {"a": 1}, True, None, [1.5], ["text"], [None], [[b"x"]], [{}], [True], [0], [99],
                  [-1]]
_WRONG_RECORDS = ["text", 1, b"x", {"a": 1}, True, None, [1], ["text"], [None], [[]], [{"a": 1}]]


def _wrong_field_cases():
    """(field, path to it in the header, wrong value, header) for every field of every message and record."""
    cases = []

    def walk(record, path, owner, header):
        for position, field in enumerate(dataclasses.fields(record)):
            value = getattr(record, field.name)
            here = (*path, position + 1 if not path else position)  # a message's fields follow its kind
            label = f"{owner}.{field.name}"
            optional = field.type.replace(" ", "").endswith("|None")
            if isinstance(value, Payload):
                wrong = _WRONG_PAYLOAD
            elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                wrong = _WRONG_RECORDS
                walk(value[0], (*here, 0), type(value[0]).__name__, header)
            elif value is None:
                continue  # the same field is set in another sample
            else:
                kind = bool if type(value) is bool else int if isinstance(value, int) else type(value)  # IntEnums
                wrong = _WRONG_FOR[kind]
            cases.extend((label, here, bad, header) for bad in wrong if not (optional and bad is None))

    for message in samples():
        walk(message, (), type(message).__name__, header_of(message))
    return cases


_CASES = _wrong_field_cases()


def test_wrong_field_cases_cover_every_field():
    records = {type(m) for m in samples()} | {ObjectSpec, TaskSpec, GraphTask, TaskResult, OutputLine}
    every_field = {f"{cls.__name__}.{field.name}" for cls in records for field in dataclasses.fields(cls)}
    assert {case[0] for case in _CASES} == every_field


@pytest.mark.parametrize("label,path,bad,header", _CASES, ids=[f"{c[0]}={c[2]!r}" for c in _CASES])
def test_wrong_field_type(label, path, bad, header):
    mutated = copy.deepcopy(header)
    target = mutated
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = bad
    with pytest.raises(ProtocolError):
        decode([pack(mutated), b"frame one"])


def test_truncated_headers():
    for message in samples():
        frames = wire(message)
        header = frames[0]
        for cut in range(len(header)):
            with pytest.raises(ProtocolError):
                decode([header[:cut], *frames[1:]])


def test_missing_payload_frames():
    big = b"b" * INLINE_LIMIT
    frames = wire(PutObjects([ObjectSpec(OBJECT_ID, Payload([big]))]))
    with pytest.raises(ProtocolError):
        decode(frames[:1])


def test_random_bytes_never_raise_anything_but_protocol_error():
    rng = random.Random(20240601)
    for _ in range(3000):
        frames = [rng.randbytes(rng.randrange(0, 96)) for _ in range(rng.randrange(1, 4))]
        assert_protocol_error_or_message(frames)


def test_random_byte_flips_of_valid_messages():
    rng = random.Random(7)
    encoded = [wire(m) for m in samples()]
    for _ in range(3000):
        frames = list(rng.choice(encoded))
        header = bytearray(frames[0])
        for _ in range(rng.randrange(1, 4)):
            header[rng.randrange(len(header))] = rng.randrange(256)
        frames[0] = bytes(header[: rng.randrange(1, len(header) + 1)] if rng.random() < 0.3 else header)
        assert_protocol_error_or_message(frames)


def _random_value(rng: random.Random, depth: int = 0):
    choice = rng.randrange(10 if depth < 3 else 8)
    if choice == 0:
        return rng.randrange(-(2**63), 2**64)
    if choice == 1:
        return rng.randrange(-3, 10)
    if choice == 2:
        return rng.random() * 1e6
    if choice == 3:
        return rng.choice([True, False, None])
    if choice == 4:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(8)))
    if choice == 5:
        return rng.randbytes(rng.randrange(20))
    if choice == 6:
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(4))
    if choice == 7:
        return []
    if choice == 8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {str(i): _random_value(rng, depth + 1) for i in range(rng.randrange(4))}


def test_random_structures_with_valid_kinds():
    rng = random.Random(99)
    kinds = [int(k) for k in Kind]
    for _ in range(3000):
        header = [rng.choice(kinds), *(_random_value(rng) for _ in range(rng.randrange(0, 9)))]
        frames = [pack(header), *(rng.randbytes(rng.randrange(4)) for _ in range(rng.randrange(3)))]
        assert_protocol_error_or_message(frames)


def test_random_mutations_of_valid_headers():
    """Replace one value anywhere in a valid header by a random one."""
    rng = random.Random(1234)
    headers = [header_of(m) for m in samples()]
    for _ in range(3000):
        header = copy.deepcopy(rng.choice(headers))
        if len(header) == 1:
            header.append(_random_value(rng))
        node = header
        while True:
            index = rng.randrange(1, len(node)) if node is header else rng.randrange(len(node))
            if isinstance(node[index], list) and node[index] and rng.random() < 0.6:
                node = node[index]
                continue
            node[index] = _random_value(rng)
            break
        assert_protocol_error_or_message([pack(header), b"frame one"])
