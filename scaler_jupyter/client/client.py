"""The Client: a ``concurrent.futures.Executor`` whose tasks run on a cluster."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import socket
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from scaler_jupyter import task_context
from scaler_jupyter.client import graph as graphs
from scaler_jupyter.client.connection import Connection
from scaler_jupyter.client.future import Future
from scaler_jupyter.errors import (
    AuthenticationError,
    ConnectionLostError,
    NoWorkerError,
    NoWorkerWarning,
    SerializationError,
    ShutdownRefusedError,
    TaskCrashedError,
    WorkerDiedError,
)
from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    TASK_ID_BITS,
    Cancel,
    ClientBye,
    ClientHello,
    ClientWelcome,
    DeleteObjects,
    GraphTask,
    ObjectSpec,
    Output,
    PutObjects,
    Rejected,
    Results,
    Shutdown,
    Status,
    StatusReply,
    StatusRequest,
    Submit,
    SubmitGraph,
    TaskResult,
    TaskSpec,
    TaskWarning,
    is_result_object_id,
    result_object_id,
    serialization,
)
from scaler_jupyter.protocol.serialization import ObjectRef, Serializer
from scaler_jupyter.security import load_keys

logger = logging.getLogger(__name__)

_BATCH = 1024  # tasks per Submit message from map


class _RemoteTraceback(Exception):
    """Carries the worker-side traceback as the ``__cause__`` of a task's exception, as ProcessPoolExecutor does."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


_MISSING = object()


class _OrderedResults:
    """The results of one ``map`` call, kept in order without a Future per call.

    The I/O thread fills slots as results arrive; the consumer waits for the next
    slot only. A ``map`` of 100,000 calls thus costs one Condition, not 100,000.
    """

    def __init__(self, cancel: Callable[[list[int]], None]) -> None:
        self._task_ids: list[int] = []
        self._outcomes: list = []
        self._condition = threading.Condition()
        self._filled = 0
        self._cancel = cancel
        self._closed = False
        self._awaited = -1  # the slot the consumer sleeps on: only its filling wakes it

    def add(self, task_id: int) -> int:
        self._task_ids.append(task_id)
        self._outcomes.append(_MISSING)
        return len(self._task_ids) - 1

    def set(self, index: int, ok: bool | None, outcome) -> None:
        with self._condition:
            self._outcomes[index] = (ok, outcome)
            self._filled += 1
            if index == self._awaited or self._filled == len(self._outcomes):
                self._condition.notify_all()

    def wait(self) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._filled == len(self._outcomes) or self._closed)

    def close(self, start: int = 0) -> None:
        """Cancel the calls from ``start`` on whose results have not arrived."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            pairs = zip(self._task_ids[start:], self._outcomes[start:], strict=True)
            unfinished = [task_id for task_id, outcome in pairs if outcome is _MISSING]
        if unfinished:
            self._cancel(unfinished)

    def iterate(self, deadline: float | None, flatten: bool) -> Iterator:
        index = 0
        try:
            for index in range(len(self._outcomes)):
                with self._condition:
                    if self._outcomes[index] is _MISSING:
                        self._awaited = index
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if not self._condition.wait_for(lambda i=index: self._outcomes[i] is not _MISSING,
                                                        remaining):
                            raise concurrent.futures.TimeoutError()
                    ok, outcome = self._outcomes[index]
                    self._outcomes[index] = None  # let the value go once yielded
                if ok is None:
                    raise concurrent.futures.CancelledError()
                if not ok:
                    raise outcome
                if flatten:
                    yield from outcome
                else:
                    yield outcome
            index += 1
        finally:
            self.close(index)


def _run_chunk(function: Callable, chunk: list[tuple]) -> list:
    """Run ``function`` over a chunk of argument tuples: ``map``'s ``chunksize`` unit of work."""
    return [function(*args) for args in chunk]


class Client(concurrent.futures.Executor):
    """Submit Python functions to a cluster, as to a ``ProcessPoolExecutor``.

    With no ``address``, inside a task it connects to that task's scheduler, and
    elsewhere it starts a private :class:`~scaler_jupyter.LocalCluster` with one
    worker per core, stopped on :meth:`shutdown`.

    ``serializer`` replaces cloudpickle for functions, arguments and results; it
    travels to the workers with the tasks. With ``store_tasks=False`` a task whose
    worker dies fails with :class:`WorkerDiedError` instead of running again.
    ``timeout`` bounds the wait for the scheduler when connecting, and how long it
    may stay silent before every pending future fails with ``ConnectionLostError``.
    ``keys`` is the directory written by ``scaler-jupyter keys``, for a scheduler
    started with ``--keys``; inside a task, the task's own scheduler's keys are used.
    """

    def __init__(self, address: str | None = None, serializer: Serializer | None = None,
                 store_tasks: bool = True, timeout: float = 30.0, name: str | None = None,
                 keys: str | os.PathLike | None = None) -> None:
        self._cluster = None
        if address is None:
            address = task_context.scheduler_address()
        if keys is None and address is not None and address == task_context.scheduler_address():
            keys = task_context.keys_directory()
        cluster_keys = load_keys(keys)  # a missing key file is reported here, before anything starts
        if address is None:
            from scaler_jupyter.cluster import LocalCluster

            self._cluster = LocalCluster(n_workers=os.cpu_count() or 1, keys=keys)
            address = self._cluster.address
        self.address = address
        self.serializer = serializer
        self.store_tasks = store_tasks
        self.timeout = timeout
        self._futures: dict[int, Future] = {}
        self._futures_lock = threading.Lock()
        self._sent_objects: set[bytes] = set()
        self._function_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._status_replies: dict[int, concurrent.futures.Future] = {}
        self._shutdown_reply: concurrent.futures.Future | None = None
        self._cluster_stopped = False  # the scheduler said it stops: nothing more can reach it
        self._request_ids = itertools.count(1)
        self._welcome = concurrent.futures.Future()
        self._task_ids: Iterator[int] | None = None
        self._graph_ids = itertools.count(1)
        self._closed = False
        self._connection = Connection(address, self._on_message, self._on_lost, silence_timeout=timeout,
                                      keys=cluster_keys, on_refused=self._on_refused)
        self._connection.send(ClientHello(PROTOCOL_VERSION, name or f"client-{os.getpid()}", socket.gethostname(),
                                          os.getpid(), store_tasks))
        self._serializer_id = self._put(serialization.dumps(serializer)) if serializer is not None else None
        try:
            welcome = self._welcome.result(timeout)
        except concurrent.futures.TimeoutError:
            failure = self._connection.handshake_failure
            self._close_connection()
            if failure is not None:
                raise TimeoutError(f"could not join the scheduler at {address} within {timeout:g}s: "
                                   f"{failure}") from None
            raise TimeoutError(f"no scheduler answered at {address} within {timeout:g}s: "
                               "is `scaler-jupyter scheduler` running there?") from None
        except BaseException:
            self._close_connection()
            raise
        # task ids are unique across clients: the scheduler's number for this client, then a counter
        self._task_ids = itertools.count(welcome.client_number << TASK_ID_BITS)
        self.client_number = welcome.client_number

    # -- the Executor contract -----------------------------------------------

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker; return its future."""
        return self.submit_with(fn, args, kwargs)

    def submit_with(self, fn: Callable, args: tuple = (), kwargs: dict | None = None, *,
                    tags: Iterable[str] | None = None, priority: int = 0) -> Future:
        """Like :meth:`submit`, with the task's needs: run only on workers with all ``tags``; higher
        ``priority`` runs first."""
        self._check_open()
        spec = self._spec(fn, self._function_id(fn), args, kwargs or {}, sorted(tags or ()), priority)
        future = Future(spec.task_id, self._cancel)
        with self._futures_lock:
            self._futures[spec.task_id] = future
        self._connection.send(Submit([], [spec]))
        return future

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1) -> Iterator:
        """Like ``Executor.map``: submits every call at once, yields results in order.

        The function is shipped once and the calls travel in batches. ``chunksize``
        groups that many calls into one task, for very short functions.
        """
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        calls: Iterable[tuple] = zip(*iterables)  # noqa: B905 - stops at the shortest, as Executor.map
        task_fn = fn
        if chunksize > 1:
            calls = ((fn, chunk) for chunk in _chunks(calls, chunksize))
            task_fn = _run_chunk
        function_id = self._function_id(task_fn)
        results = _OrderedResults(self._cancel_many)
        specs: list[TaskSpec] = []
        try:
            for args in calls:
                spec = self._spec(task_fn, function_id, args, {}, [], 0)
                with self._futures_lock:
                    self._futures[spec.task_id] = (results, results.add(spec.task_id))
                specs.append(spec)
                if len(specs) == _BATCH:
                    self._connection.send(Submit([], specs))
                    specs = []
        except BaseException:  # an argument that cannot be serialized: what was sent is cancelled
            results.close()
            raise
        if specs:
            self._connection.send(Submit([], specs))
        return results.iterate(deadline, flatten=chunksize > 1)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the client (and its private cluster) once pending tasks are done, as ``Executor.shutdown``.

        New submissions fail at once. With ``cancel_futures`` pending tasks are cancelled;
        with ``wait=False`` this returns at once and pending futures still complete.
        """
        if self._closed:
            return
        self._closed = True
        with self._futures_lock:
            pending = list(self._futures.values())
        futures = [entry for entry in pending if type(entry) is not tuple]
        maps = {entry[0] for entry in pending if type(entry) is tuple}
        if cancel_futures:
            for future in futures:
                future.cancel()
            for results in maps:
                results.close()

        def close_when_done() -> None:
            concurrent.futures.wait(futures)
            for results in maps:
                results.wait()
            self._close_connection()

        if wait:
            close_when_done()
        else:
            threading.Thread(target=close_when_done, name="scaler-jupyter-shutdown", daemon=True).start()

    def _close_connection(self) -> None:
        self._connection.close(ClientBye(), linger=not self._cluster_stopped)
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    # -- beyond the Executor -------------------------------------------------

    def get(self, dsk: Any, keys: Any, block: bool = True, *, timeout: float | None = None,
            name: str | None = None, **dask_options: Any) -> Any:
        """Run a Dask-format task graph on the cluster; return the values of ``keys``, in their shape.

        ``keys`` is a key, or nested lists of keys. The graph is culled to what they need
        and checked first: a cycle or a missing key raises :class:`~scaler_jupyter.errors.GraphError`
        with nothing started. The scheduler runs each task once its dependencies are done and
        keeps intermediate results only while a task still needs them; only the values of
        ``keys`` come back. The first task to fail cancels the rest, and its exception is raised
        here with the remote traceback. With ``block=False``, futures in the shape of ``keys``.

        Works as Dask's ``scheduler=``: ``dask.compute(x, scheduler=client.get)``; the
        options Dask passes to schedulers are accepted and ignored.
        """
        self._check_open()
        plan = graphs.plan(dsk, keys)
        futures = self._submit_graph(plan, name)
        shaped = graphs.repack(plan.shape, futures)
        if not block:
            return shaped
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            values = {}
            for key, future in futures.items():
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                values[key] = future.result(remaining)
        except BaseException:  # a failure, a timeout or Ctrl-C: nothing more of the graph runs
            for future in futures.values():
                future.cancel()
            raise
        return graphs.repack(plan.shape, values)

    def _submit_graph(self, plan: graphs.Plan, name: str | None) -> dict[Any, Future]:
        """Send the graph's tasks in one message; return a future per requested key."""
        graph_id = next(self._graph_ids)
        objects: list[ObjectSpec] = []  # large literals: in the graph's own message, held by its tasks there
        task_ids: dict[Any, int] = {}
        literals: dict[Any, Any] = {}
        specs: list[TaskSpec] = []
        nodes: list[GraphTask] = []
        outputs = set(plan.outputs)
        runners: dict[Callable, bytes] = {}
        literal_values: dict[Any, Any] = {}  # how each literal travels: itself, or a reference to its object
        for node in plan.nodes:
            if node.literal:
                literals[node.key] = node.expression
                continue
            if node.runner not in runners:
                runners[node.runner] = self._function_id(node.runner)
            values = {}
            for dependency in node.dependencies:
                if dependency in task_ids:
                    values[dependency] = ObjectRef(result_object_id(task_ids[dependency]))
                else:
                    if dependency not in literal_values:
                        literal_values[dependency] = self._graph_literal(dependency, literals[dependency], objects)
                    values[dependency] = literal_values[dependency]
            try:
                payload, refs = serialization.dumps_collecting_refs(((node.expression, values), {}), self.serializer)
            except Exception as exc:
                raise SerializationError(f"the task of key {node.key!r} cannot be serialized: "
                                         f"{type(exc).__name__}: {exc}") from exc
            task_id = next(self._task_ids)
            task_ids[node.key] = task_id
            specs.append(TaskSpec(task_id, runners[node.runner], payload,
                                  [r for r in refs if not is_result_object_id(r)], self._serializer_id, [],
                                  node.level, task_context.current_task_id))
            nodes.append(GraphTask(task_id, _key_text(node.key),
                                   [task_ids[d] for d in node.dependencies if d in task_ids], node.key in outputs))
        run = _GraphRun(self, list(task_ids.values()))
        futures: dict[Any, Future] = {}
        for key in plan.outputs:
            if key in task_ids:
                futures[key] = run.future_for(task_ids[key])
            else:  # a literal asked for as it is: nothing to run
                futures[key] = Future(-1, lambda _: None)
                futures[key].set_result(literals[key])
        if specs:
            with self._futures_lock:
                for task_id in task_ids.values():
                    self._futures[task_id] = (run, task_id)
            label = name or (_key_text(plan.outputs[0]) if plan.outputs else f"graph-{graph_id}")
            self._connection.send(SubmitGraph(graph_id, label, objects, specs, nodes))
            # the tasks hold the literals now; this client's claim goes, unless it sent one itself (send_object)
            unclaimed = [obj.object_id for obj in objects if obj.object_id not in self._sent_objects]
            if unclaimed:
                self._connection.send(DeleteObjects(unclaimed))
        return futures

    def _graph_literal(self, key: Any, value: Any, objects: list[ObjectSpec]) -> Any:
        """A literal of the graph as its dependents get it: inline when small, else stored once on the
        scheduler and referred to, so a large array feeding many tasks travels once. Each graph carries
        its own large literals: a claim shared between graphs could be dropped by one while another needs it."""
        if value is None or isinstance(value, (bool, int, float, complex)):
            return value
        try:
            payload = serialization.dumps(value, self.serializer)
        except Exception as exc:
            raise SerializationError(f"the value of key {key!r} ({type(value).__name__}) cannot be serialized: "
                                     f"{type(exc).__name__}: {exc}") from exc
        if payload.nbytes < _INLINE_LITERAL_BYTES:
            return value
        object_id = serialization.content_id(payload)
        objects.append(ObjectSpec(object_id, payload))
        return ObjectRef(object_id, payload.nbytes)

    def send_object(self, obj: Any) -> ObjectRef:
        """Store ``obj`` on the scheduler once; pass the returned reference as an argument to many tasks."""
        self._check_open()
        try:
            payload = serialization.dumps(obj, self.serializer)
        except Exception as exc:
            message = f"send_object: the {type(obj).__name__} object could not be serialized: {exc}"
            raise SerializationError(message) from exc
        return ObjectRef(self._put(payload), payload.nbytes)

    def delete_object(self, ref: ObjectRef) -> None:
        """Free an object stored with :meth:`send_object`."""
        self._sent_objects.discard(ref.object_id)
        self._connection.send(DeleteObjects([ref.object_id]))

    def status(self, timeout: float | None = None) -> dict:
        """The scheduler's monitor snapshot: workers, clients, task counts."""
        self._check_open()
        request_id = next(self._request_ids)
        reply: concurrent.futures.Future = concurrent.futures.Future()
        self._status_replies[request_id] = reply
        self._connection.send(StatusRequest(request_id))
        try:
            return reply.result(self.timeout if timeout is None else timeout)
        finally:
            self._status_replies.pop(request_id, None)

    def shutdown_cluster(self, timeout: float | None = None) -> None:
        """Stop the scheduler and every one of its workers, then this client.

        Every client of the cluster sees its pending futures fail with
        ``ConnectionLostError``. A scheduler started with ``--protected`` refuses:
        :class:`~scaler_jupyter.errors.ShutdownRefusedError`, and nothing stops.
        """
        self._check_open()
        reply: concurrent.futures.Future = concurrent.futures.Future()
        self._shutdown_reply = reply
        self._connection.send(Shutdown(f"asked by client {self.client_number} on {socket.gethostname()}"))
        try:
            reply.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the scheduler at {self.address} did not answer the shutdown request") from None
        finally:
            self._shutdown_reply = None
        self._closed = True
        self._close_connection()

    def wait_for_workers(self, n: int = 1, timeout: float | None = None) -> None:
        """Block until at least ``n`` workers are connected, as ``LocalCluster.wait_for_workers``.

        Raises ``TimeoutError`` after ``timeout`` seconds (default: the client's ``timeout``).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.status()["workers"]) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} workers joined {self.address} in time")
            time.sleep(0.05)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._futures)} pending"
        return f"<Client {self.address} {state}>"

    # -- internals -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _put(self, payload) -> bytes:
        """Store ``payload`` on the scheduler once. It is queued before it is marked sent, so a task another
        thread submits as soon as it sees the mark always reaches the scheduler after the object."""
        object_id = serialization.content_id(payload)
        if object_id not in self._sent_objects:
            self._connection.send(PutObjects([ObjectSpec(object_id, payload)]))
            self._sent_objects.add(object_id)
        return object_id

    def _function_id(self, fn: Callable) -> bytes:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        try:
            object_id = self._function_ids.get(fn)
        except TypeError:  # not weak-referenceable: serialize each time
            object_id = None
        if object_id is not None and object_id in self._sent_objects:
            return object_id
        try:
            payload = serialization.dumps(fn, self.serializer)
        except Exception as exc:
            name = getattr(fn, "__qualname__", type(fn).__name__)
            raise SerializationError(f"the function {name} could not be serialized: {exc}") from exc
        object_id = self._put(payload)
        try:
            self._function_ids[fn] = object_id
        except TypeError:
            pass
        return object_id

    def _spec(self, fn: Callable, function_id: bytes, args: tuple, kwargs: dict, tags: list[str],
              priority: int) -> TaskSpec:
        try:
            payload, refs = serialization.dumps_collecting_refs((args, kwargs), self.serializer)
        except Exception as exc:
            raise SerializationError(_which_argument_fails(fn, args, kwargs, self.serializer, exc)) from exc
        return TaskSpec(next(self._task_ids), function_id, payload, refs, self._serializer_id, tags, priority,
                        task_context.current_task_id, name=getattr(fn, "__qualname__", type(fn).__name__))

    def _cancel(self, task_id: int) -> None:
        self._cancel_many([task_id])

    def _cancel_many(self, task_ids: list[int]) -> None:
        with self._futures_lock:
            for task_id in task_ids:
                self._futures.pop(task_id, None)
        self._connection.send(Cancel(task_ids))  # dropped if the connection is already closed

    # -- in the I/O thread ---------------------------------------------------

    def _on_message(self, message) -> None:
        if isinstance(message, Results):
            for result in message.results:
                self._on_result(result)
        elif isinstance(message, Output):
            for line in message.lines:
                stream = sys.stderr if line.stream == "stderr" else sys.stdout
                stream.write(line.text)
                stream.flush()
        elif isinstance(message, StatusReply):
            reply = self._status_replies.get(message.request_id)
            if reply is not None and not reply.done():
                reply.set_result(message.snapshot)
        elif isinstance(message, TaskWarning):  # the scheduler says: these tasks may wait for ever
            warnings.warn(message.message, NoWorkerWarning, stacklevel=1)
        elif isinstance(message, ClientWelcome):
            if not self._welcome.done():
                self._welcome.set_result(message)
        elif isinstance(message, Shutdown):  # the cluster stops: what is pending will never finish
            self._cluster_stopped = True
            self._on_lost(f"the scheduler at {self.address} shut down: {message.reason}")
            if self._shutdown_reply is not None and not self._shutdown_reply.done():
                self._shutdown_reply.set_result(message.reason)
        elif isinstance(message, Rejected):
            shutdown_reply = self._shutdown_reply
            if shutdown_reply is not None and not shutdown_reply.done():  # the answer to shutdown_cluster()
                shutdown_reply.set_exception(ShutdownRefusedError(
                    f"the scheduler at {self.address} refused to shut down: {message.reason}"))
            elif not self._welcome.done():
                self._welcome.set_exception(ConnectionError(f"the scheduler refused this client: {message.reason}"))
            else:  # it dropped us (declared us gone): our tasks are cancelled there
                self._on_lost(f"the scheduler at {self.address} dropped this client: {message.reason}")

    def _on_result(self, result: TaskResult) -> None:
        with self._futures_lock:
            entry = self._futures.pop(result.task_id, None)
        if entry is None:
            return
        if result.status == Status.OK:
            try:
                outcome, ok = serialization.loads(result.payload, self.serializer), True
            except Exception as exc:
                outcome, ok = SerializationError(f"the result of task {result.task_id} could not be deserialized "
                                                 f"here: {type(exc).__name__}: {exc}"), False
        elif result.status == Status.CANCELLED:
            outcome, ok = None, None
        else:
            outcome, ok = self._exception(result), False
        if type(entry) is tuple:
            results, index = entry
            results.set(index, ok, outcome)
            return
        if result.profile:
            wall, cpu, memory = result.profile
            entry.profile = {"wall_time": wall, "cpu_time": cpu, "peak_memory": memory}
        try:
            if ok:
                entry.set_result(outcome)
            elif ok is None:
                entry.cancel()
            else:
                entry.set_exception(outcome)
        except concurrent.futures.InvalidStateError:  # cancelled meanwhile by the user
            pass

    def _exception(self, result: TaskResult) -> BaseException:
        if result.status == Status.ERROR:
            try:
                exc, remote_traceback = serialization.loads(result.payload)
            except Exception as load_error:  # the exception's class does not exist here
                return SerializationError(f"the task raised an exception that could not be loaded here "
                                          f"({load_error}): {result.message}")
            exc.__cause__ = _RemoteTraceback(remote_traceback)
            return exc
        kinds = {
            Status.CRASHED: TaskCrashedError,
            Status.WORKER_DIED: WorkerDiedError,
            Status.NO_WORKER: NoWorkerError,
            Status.SERIALIZATION: SerializationError,
        }
        return kinds.get(result.status, ConnectionLostError)(result.message)

    def _on_refused(self, reason: str) -> None:
        """The scheduler refused our security handshake, as it will every retry."""
        if not self._welcome.done():
            self._welcome.set_exception(AuthenticationError(f"cannot join the scheduler at {self.address}: {reason}"))
        else:  # it changed keys under us: what is pending fails when it is found silent
            logger.error("the scheduler at %s refused this client on reconnecting: %s", self.address, reason)

    def _on_lost(self, reason: str) -> None:
        with self._futures_lock:
            entries, self._futures = self._futures, {}
        for entry in entries.values():
            if type(entry) is tuple:
                entry[0].set(entry[1], False, ConnectionLostError(reason))
                continue
            try:
                entry.set_exception(ConnectionLostError(reason))
            except concurrent.futures.InvalidStateError:
                pass
        if not self._welcome.done():
            self._welcome.set_exception(ConnectionLostError(reason))


_INLINE_LITERAL_BYTES = 4096  # a graph literal smaller than this is copied into each task that uses it


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


class _GraphRun:
    """The client's side of one running graph: a future per requested key, and how it ends.

    The I/O thread reports each output's result, and any task's failure, through
    :meth:`set`, as ``map``'s results are reported. The first failure or cancel ends
    it: every unfinished future gets that outcome, and the scheduler drops the rest.
    """

    def __init__(self, client: Client, task_ids: list[int]) -> None:
        self._client = client
        self._task_ids = task_ids
        self._futures: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._ended = False

    def future_for(self, task_id: int) -> Future:
        future = self._futures.get(task_id)
        if future is None:
            future = self._futures[task_id] = Future(task_id, lambda _: self.close())
        return future

    def set(self, task_id: int, ok: bool | None, outcome) -> None:
        future = self._futures.get(task_id)
        if ok:
            if future is not None:
                try:
                    future.set_result(outcome)
                except concurrent.futures.InvalidStateError:  # cancelled meanwhile
                    pass
            if all(f.done() for f in self._futures.values()):
                self._end()
            return
        self._end()
        for future in self._futures.values():
            if future.done():
                continue
            try:
                if ok is None:
                    future.cancel()
                else:
                    future.set_exception(outcome)
            except concurrent.futures.InvalidStateError:
                pass

    def wait(self) -> None:
        concurrent.futures.wait(list(self._futures.values()))

    def close(self) -> None:
        """Cancel the graph: every task not yet done is dropped, and every unfinished future cancelled."""
        if not self._end():
            return
        self._client._cancel_many(self._task_ids)  # the scheduler cancels the whole graph at the first it finds
        for future in self._futures.values():
            future.cancel()

    def _end(self) -> bool:
        """Forget the graph's tasks (no more results come for them); True the first time."""
        with self._lock:
            if self._ended:
                return False
            self._ended = True
        with self._client._futures_lock:
            for task_id in self._task_ids:
                self._client._futures.pop(task_id, None)
        return True


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _which_argument_fails(fn: Callable, args: tuple, kwargs: dict, serializer, error: Exception) -> str:
    """Name the argument that cannot be serialized, so the user knows what to fix."""
    name = getattr(fn, "__qualname__", type(fn).__name__)
    named = [(f"argument {i}", value) for i, value in enumerate(args)]
    named += [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]
    for label, value in named:
        try:
            serialization.dumps(value, serializer)
        except Exception as exc:
            return f"{label} of {name}() ({type(value).__name__}) cannot be serialized: {type(exc).__name__}: {exc}"
    return f"the arguments of {name}() cannot be serialized: {type(error).__name__}: {error}"
