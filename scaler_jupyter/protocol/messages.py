"""Every message of the wire, and the one codec that turns them into ZeroMQ frames.

A message is a small typed record. On the wire it is one msgpack header frame,
``[kind, field, field, ...]``, followed by zero or more raw frames that carry the
large parts of user payloads. A :class:`Payload` is opaque here: a list of
buffers (a pickle stream and its out-of-band buffers) that the scheduler stores
and forwards without ever unpickling. Small parts ride inline in the header as
msgpack ``bin``; parts of ``INLINE_LIMIT`` bytes or more travel as their own
frames, which ZeroMQ sends without copying. Between processes of one host a large
part may instead be a :class:`Segment`: a few numbers naming a shared-memory
segment that the receiver maps (``shared_memory.py``), so its bytes never cross a
socket.

Decoding checks each field's type, so a malformed or hostile message is a
:class:`~scaler_jupyter.errors.ProtocolError` at the edge, never a half-applied
change deep in the scheduler.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

import msgpack

from scaler_jupyter.errors import ProtocolError

PROTOCOL_VERSION = 4  # 2: TaskSpec.environment; 3: TaskSpec.summarize; 4: shared-memory segments, host ids
TASK_ID_BITS = 40  # a client's task ids are its number << TASK_ID_BITS plus a counter: unique, and its own
INLINE_LIMIT = 64 * 1024


class Kind(enum.IntEnum):
    """Message kinds; the first element of every header."""

    CLIENT_HELLO = 1
    CLIENT_WELCOME = 2
    CLIENT_BYE = 3
    SUBMIT = 4
    PUT_OBJECTS = 5
    DELETE_OBJECTS = 6
    CANCEL = 7
    RESULTS = 8
    OUTPUT = 9
    STATUS_REQUEST = 10
    STATUS_REPLY = 11
    WORKER_HELLO = 12
    WORKER_WELCOME = 13
    WORKER_BYE = 14
    HEARTBEAT = 15
    ASSIGN = 16
    TASK_BLOCKED = 17
    SHUTDOWN = 18
    REJECTED = 20
    TAKE_BACK = 21
    TAKEN_BACK = 22
    SUBMIT_GRAPH = 23
    TASK_WARNING = 24
    RELEASE_SEGMENTS = 25


class Status(enum.IntEnum):
    """How a task ended."""

    OK = 0
    ERROR = 1  # the task raised; payload is the pickled exception
    CRASHED = 2  # the task killed its processor
    CANCELLED = 3
    WORKER_DIED = 4
    NO_WORKER = 5
    SERIALIZATION = 6  # the worker could not load the function or arguments
    INVALID = 7  # the scheduler refused the task: a malformed graph


@dataclasses.dataclass(slots=True, frozen=True)
class Segment:
    """A payload part that stays in shared memory on one host: the memfd ``fd`` of process ``pid``, whose
    inode (its name while it lives, whoever holds it) is ``inode``, of ``size`` bytes. See ``shared_memory.py``."""

    pid: int
    fd: int
    inode: int
    size: int


class Payload:
    """Serialized user data: a list of buffers (or :class:`Segment` parts) the engine moves but never reads."""

    __slots__ = ("parts",)

    def __init__(self, parts: list) -> None:
        self.parts = parts

    @property
    def nbytes(self) -> int:
        return sum(map(part_nbytes, self.parts))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Payload) and [_comparable(p) for p in self.parts] == [
            _comparable(p) for p in other.parts]

    def __repr__(self) -> str:
        return f"Payload({self.nbytes} bytes in {len(self.parts)} parts)"


def part_nbytes(part) -> int:
    """The size of one payload part (bytes first: most parts are a small pickle stream)."""
    kind = type(part)
    return len(part) if kind is bytes else part.size if kind is Segment else memoryview(part).nbytes


def _comparable(part):
    return part if type(part) is Segment else bytes(part)


# ---------------------------------------------------------------------------
# Records nested inside messages


@dataclasses.dataclass(slots=True)
class ObjectSpec:
    """An object in the store: functions, serializers and ``send_object`` data alike."""

    object_id: bytes
    payload: Payload


@dataclasses.dataclass(slots=True)
class TaskSpec:
    """One task as the client submits it and the scheduler forwards it to a worker."""

    task_id: int
    function_id: bytes
    args: Payload
    object_ids: list[bytes]  # objects the arguments refer to, beside the function and serializer
    serializer_id: bytes | None
    tags: list[str]
    priority: int
    parent_id: int | None
    # objects that set the processor up before the task loads: the caller's import path, modules shipped by
    # value (see scaler_jupyter/import_environment.py); the same list for every task while they do not change
    environment: list[bytes] = dataclasses.field(default_factory=list)
    origin: str | None = None  # what submitted it, e.g. the notebook cell "In [5]: x = f(3)" (task_origin.py)
    name: str = ""  # what the task runs (the function's qualified name), for the monitor's task stream
    # set by the scheduler on the tasks of a small graph: the result's short repr comes back in
    # TaskResult.message, so a DAG panel can show what each node made (scheduler/graphs.py)
    summarize: bool = False


def needed_objects(spec: TaskSpec) -> list[bytes]:
    """The stored objects a task cannot run without: its function, serializer, referenced objects and
    environment."""
    needed = [spec.function_id, *spec.object_ids, *spec.environment]
    if spec.serializer_id is not None:
        needed.append(spec.serializer_id)
    return needed


def result_object_id(task_id: int) -> bytes:
    """The store id under which the scheduler keeps a graph task's result for the tasks that need it.

    Its length sets it apart from content ids (16 bytes), which are all a client may store.
    """
    return _RESULT_PREFIX + task_id.to_bytes(8, "big")


def is_result_object_id(object_id: bytes) -> bool:
    return len(object_id) == 9 and object_id[:1] == _RESULT_PREFIX


_RESULT_PREFIX = b"R"
CONTENT_ID_BYTES = 16


@dataclasses.dataclass(slots=True)
class GraphTask:
    """What makes a task part of a graph: the tasks it waits for, and whether its client wants its result."""

    task_id: int
    key: str  # the graph key, as text: how monitors and DAG panels name the task
    dependencies: list[int]  # task ids of the same graph, each sent before this one
    output: bool  # the client asked for this result; the others stay in the scheduler's store


@dataclasses.dataclass(slots=True)
class TaskResult:
    """How a task ended: a result or error payload, or a status and a message."""

    task_id: int
    status: int
    payload: Payload | None
    message: str  # why it failed; for a task with ``summarize``, a short repr of its result
    profile: list[float]  # [wall seconds, cpu seconds, peak rss bytes], or empty


@dataclasses.dataclass(slots=True)
class OutputLine:
    """Text a task wrote to stdout or stderr."""

    task_id: int
    stream: str
    text: str


# ---------------------------------------------------------------------------
# Messages

_MESSAGES: dict[int, type] = {}


def _message(kind: Kind):
    def register(cls):
        cls = dataclasses.dataclass(slots=True)(cls)
        cls.KIND = kind
        _MESSAGES[kind] = cls
        return cls

    return register


@_message(Kind.CLIENT_HELLO)
class ClientHello:
    KIND: ClassVar[Kind]
    version: int
    name: str
    host: str
    pid: int
    store_tasks: bool  # re-run the tasks of a dead worker (True) or fail them with WorkerDiedError
    host_id: str = ""  # shared_memory.host_id(): "" where segments cannot be shared


@_message(Kind.CLIENT_WELCOME)
class ClientWelcome:
    KIND: ClassVar[Kind]
    client_number: int
    heartbeat_interval: float
    host_id: str = ""  # the scheduler's: a client with the same one sends large parts as segments


@_message(Kind.CLIENT_BYE)
class ClientBye:
    KIND: ClassVar[Kind]


@_message(Kind.SUBMIT)
class Submit:
    KIND: ClassVar[Kind]
    objects: list[ObjectSpec]
    tasks: list[TaskSpec]


@_message(Kind.SUBMIT_GRAPH)
class SubmitGraph:
    """A task graph, in dependency order: ``tasks[i]`` is the task of ``nodes[i]``.

    The scheduler releases each task when the tasks it depends on are done, keeps their
    results in its store for as long as a task of the graph needs them, and sends back
    only the outputs' results. The first failure ends the graph.
    """

    KIND: ClassVar[Kind]
    graph_id: int  # the client's own numbering
    name: str
    objects: list[ObjectSpec]
    tasks: list[TaskSpec]
    nodes: list[GraphTask]


@_message(Kind.PUT_OBJECTS)
class PutObjects:
    KIND: ClassVar[Kind]
    objects: list[ObjectSpec]


@_message(Kind.DELETE_OBJECTS)
class DeleteObjects:
    KIND: ClassVar[Kind]
    object_ids: list[bytes]


@_message(Kind.CANCEL)
class Cancel:
    KIND: ClassVar[Kind]
    task_ids: list[int]


@_message(Kind.RESULTS)
class Results:
    KIND: ClassVar[Kind]
    results: list[TaskResult]


@_message(Kind.OUTPUT)
class Output:
    KIND: ClassVar[Kind]
    lines: list[OutputLine]


@_message(Kind.STATUS_REQUEST)
class StatusRequest:
    KIND: ClassVar[Kind]
    request_id: int


@_message(Kind.STATUS_REPLY)
class StatusReply:
    KIND: ClassVar[Kind]
    request_id: int
    snapshot: dict


@_message(Kind.WORKER_HELLO)
class WorkerHello:
    KIND: ClassVar[Kind]
    version: int
    name: str
    host: str
    pid: int
    processors: int
    tags: list[str]
    host_id: str = ""


@_message(Kind.WORKER_WELCOME)
class WorkerWelcome:
    KIND: ClassVar[Kind]
    worker_number: int
    host_id: str = ""  # the scheduler's: a worker with another one sends results as bytes


@_message(Kind.WORKER_BYE)
class WorkerBye:
    KIND: ClassVar[Kind]


@_message(Kind.HEARTBEAT)
class Heartbeat:
    """A worker's (or client's) sign of life with its load."""

    KIND: ClassVar[Kind]
    cpu: float
    memory: int
    queued: int
    running: int


@_message(Kind.ASSIGN)
class Assign:
    """Tasks for a worker (or a processor), with the objects it does not hold yet."""

    KIND: ClassVar[Kind]
    objects: list[ObjectSpec]
    tasks: list[TaskSpec]


@_message(Kind.TASK_BLOCKED)
class TaskBlocked:
    """The task waits for children it submitted: its worker may run one more processor meanwhile."""

    KIND: ClassVar[Kind]
    task_id: int


@_message(Kind.SHUTDOWN)
class Shutdown:
    """Stop. From a client to the scheduler: stop the cluster (refused with ``Rejected`` by a ``--protected``
    scheduler). From the scheduler to a worker: stop; to a client: the cluster stops. From an agent to a
    processor: exit."""

    KIND: ClassVar[Kind]
    reason: str


@_message(Kind.TAKE_BACK)
class TakeBack:
    """The scheduler asks a worker to return queued tasks it has not started, to run them elsewhere."""

    KIND: ClassVar[Kind]
    task_ids: list[int]


@_message(Kind.TAKEN_BACK)
class TakenBack:
    """The tasks a worker returned: none of them started there. The rest it keeps and runs."""

    KIND: ClassVar[Kind]
    task_ids: list[int]


@_message(Kind.TASK_WARNING)
class TaskWarning:
    """The scheduler warns a client about some of its tasks (they wait for tags no worker offers).

    ``task_ids`` names some of them (at most a few hundred); ``message`` says how many, and what to do.
    """

    KIND: ClassVar[Kind]
    message: str
    task_ids: list[int]


@_message(Kind.RELEASE_SEGMENTS)
class ReleaseSegments:
    """Stop holding these shared-memory segments (by inode) for the sender: it holds its own reference now
    (the scheduler, of what a client or worker sent it), or it has mapped them (a client, of results)."""

    KIND: ClassVar[Kind]
    inodes: list[int]


@_message(Kind.REJECTED)
class Rejected:
    """The scheduler refused a message; sent back so a peer is not left waiting."""

    KIND: ClassVar[Kind]
    reason: str


# ---------------------------------------------------------------------------
# The codec. Per-record encoders and decoders are generated once from the
# annotations above, so the schema has one source and the hot path runs as
# straight-line code (a generic walker cost 7-11 us a task; this costs ~2).

_RECORDS = (ObjectSpec, TaskSpec, GraphTask, TaskResult, OutputLine)
_ELEMENTS = {
    "list[int]": "type(x) is int",
    "list[str]": "type(x) is str",
    "list[bytes]": "type(x) is bytes",
    "list[float]": "type(x) is float or type(x) is int",
}
_SIMPLE = {"int": "int", "str": "str", "bytes": "bytes", "float": "(float, int)", "dict": "dict", "list": "list",
           "bool": "bool"}


def _payload_to_wire(payload: Payload, frames: list) -> list:
    wire = []
    for part in payload.parts:
        if type(part) is Segment:
            wire.append([part.pid, part.fd, part.inode, part.size])
        elif part_nbytes(part) >= INLINE_LIMIT:
            wire.append(len(frames))
            frames.append(part)
        else:
            wire.append(part if type(part) is bytes else bytes(part))
    return wire


def _payload_from_wire(wire, frames: list) -> Payload:
    if type(wire) is not list:
        raise ProtocolError("malformed payload")
    for part in wire:
        if type(part) is not bytes:
            break
    else:  # every part inline (most payloads): the decoded list is the payload's own
        return Payload(wire)
    parts = []
    for part in wire:
        if type(part) is bytes:
            parts.append(part)
        elif type(part) is int and 0 < part < len(frames):
            parts.append(frames[part])
        elif type(part) is list and len(part) == 4 and all(type(x) is int and 0 <= x < 1 << 63 for x in part):
            parts.append(Segment(*part))
        else:
            raise ProtocolError("malformed payload")
    return Payload(parts)


def _bad(cls_name: str, field: str, value) -> ProtocolError:
    return ProtocolError(f"{cls_name}.{field}: unexpected {type(value).__name__}")


def _generate(cls) -> tuple:
    """Return ``(to_wire(obj, frames) -> list, from_wire(list, frames) -> obj)`` for a record class."""
    names = [f.name for f in dataclasses.fields(cls)]
    env: dict[str, Any] = {"cls": cls, "ProtocolError": ProtocolError, "_bad": _bad,
                           "_pw": _payload_to_wire, "_pf": _payload_from_wire}
    out, checks = [], []
    for field in dataclasses.fields(cls):
        name, annotation = field.name, field.type
        optional = annotation.endswith("| None")
        base = annotation.removesuffix("| None").strip()
        nested = next((r for r in _RECORDS if base == f"list[{r.__name__}]"), None)
        element = _ELEMENTS.get(base)
        value = f"v_{name}"
        if base == "Payload":
            out.append(f"None if o.{name} is None else _pw(o.{name}, frames)" if optional else f"_pw(o.{name}, frames)")
            convert = f"_pf({value}, frames)"
            test = "False"
            if optional:
                convert = f"None if {value} is None else {convert}"
        elif element is not None:  # a list of scalars: every element checked (a loop: no generator per list)
            out.append(f"o.{name}")
            checks.append(f"    if type({value}) is not list: raise _bad({cls.__name__!r}, {name!r}, {value})\n"
                          f"    for x in {value}:\n"
                          f"        if not ({element}): raise _bad({cls.__name__!r}, {name!r}, {value})\n")
            continue
        elif nested is not None:
            env[f"enc_{name}"], env[f"dec_{name}"] = _CODECS[nested]
            out.append(f"[enc_{name}(x, frames) for x in o.{name}]")
            test = f"type({value}) is not list"
            convert = f"[dec_{name}(x, frames) for x in {value}]"
        else:
            out.append(f"o.{name}")
            types = _SIMPLE[base]
            if base == "bool":
                test = f"type({value}) is not bool"
            else:
                test = f"not isinstance({value}, {types}) or type({value}) is bool"
            if optional:
                test = f"({value} is not None and ({test}))"
            convert = value
        checks.append(f"    if {test}: raise _bad({cls.__name__!r}, {name!r}, {value})\n"
                      f"    {value} = {convert}\n")
    unpack = ", ".join(f"v_{n}" for n in names) + ("," if len(names) == 1 else "")
    source = (
        f"def to_wire(o, frames):\n    return [{', '.join(out)}]\n"
        f"def from_wire(w, frames):\n"
        f"    if type(w) is not list or len(w) != {len(names)}: raise ProtocolError('malformed {cls.__name__}')\n"
        + (f"    {unpack} = w\n" if names else "")
        + "".join(checks)
        + f"    return cls({', '.join(f'v_{n}' for n in names)})\n"
    )
    exec(source, env)
    return env["to_wire"], env["from_wire"]


_CODECS: dict[type, tuple] = {}
for _record in (*_RECORDS, *_MESSAGES.values()):
    _CODECS[_record] = _generate(_record)


def encode(message) -> list:
    """Return the frames of ``message``: the msgpack header, then the large payload parts."""
    frames: list = [b""]
    frames[0] = _packb([message.KIND, *_CODECS[type(message)][0](message, frames)])
    return frames


def decode(frames: list):
    """Return the message in ``frames``; raise :class:`ProtocolError` if they are not one."""
    if not frames:
        raise ProtocolError("empty message")
    try:
        header = msgpack.unpackb(frames[0], raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types on garbage
        raise ProtocolError(f"undecodable header: {exc}") from None
    if type(header) is not list or not header or type(header[0]) is not int:
        raise ProtocolError("header is not [kind, ...]")
    cls = _MESSAGES.get(header[0])
    if cls is None:
        raise ProtocolError(f"unknown message kind {header[0]}")
    del header[0]
    try:
        return _CODECS[cls][1](header, frames)
    except ProtocolError:
        raise
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed {cls.__name__}: {exc}") from None


_packb = msgpack.packb  # a fresh Packer per message: encode is called from several threads
