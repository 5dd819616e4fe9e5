"""The Client: a ``concurrent.futures.Executor`` whose tasks run on a cluster."""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import logging
import os
import socket
import sys
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from scaler_jupyter import task_context, task_origin
from scaler_jupyter.client import graph as graphs
from scaler_jupyter.client import graph_message
from scaler_jupyter.client.connection import Connection
from scaler_jupyter.client.delivery import Delivery, ResultListener
from scaler_jupyter.client.future import Future
from scaler_jupyter.client.graph_run import GraphRun
from scaler_jupyter.client.map_results import OrderedResults
from scaler_jupyter.errors import (
    AuthenticationError,
    ConnectionLostError,
    DeletedObjectError,
    NoWorkerWarning,
    ProtocolError,
    SerializationError,
    ShutdownRefusedError,
)
from scaler_jupyter.import_environment import CallerEnvironment
from scaler_jupyter.protocol import (
    PROTOCOL_VERSION,
    TASK_ID_BITS,
    Cancel,
    ClientBye,
    ClientHello,
    ClientWelcome,
    DeleteObjects,
    ObjectSpec,
    Output,
    PutObjects,
    Rejected,
    ReleaseSegments,
    Results,
    Shutdown,
    StatusReply,
    StatusRequest,
    Submit,
    TaskSpec,
    TaskWarning,
    serialization,
    shared_memory,
)
from scaler_jupyter.protocol.serialization import ObjectRef, Serializer
from scaler_jupyter.security import load_keys

logger = logging.getLogger(__name__)

_BATCH = 1024  # tasks per Submit message from map
_BATCH_BYTES = 8 * 1024 * 1024  # or fewer, once their arguments weigh this much: workers start on large ones sooner


class _SharedFields(NamedTuple):
    """What every task of one submission has in common (TaskSpec's fields of the same names)."""

    function_id: bytes
    serializer_id: bytes | None
    tags: list[str]
    priority: int
    parent_id: int | None
    environment: list[bytes]
    origin: str | None
    name: str


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
    ``log_level`` is that of the private cluster's processes (see :class:`~scaler_jupyter.LocalCluster`).

    Tasks import what this process can: its ``sys.path``, as it is at each submit,
    reaches the workers on this host; :meth:`register_by_value` ships a module to
    workers anywhere (see :mod:`scaler_jupyter.import_environment`).

    When the scheduler runs on this host, large parts of arguments, objects and results
    (64 KiB or more) travel through shared memory, never through the sockets
    (:mod:`scaler_jupyter.protocol.shared_memory`).
    """

    def __init__(self, address: str | None = None, serializer: Serializer | None = None,
                 store_tasks: bool = True, timeout: float = 30.0, name: str | None = None,
                 keys: str | os.PathLike | None = None, log_level: str | int | None = None) -> None:
        self._cluster = None
        if address is None:
            address = task_context.scheduler_address()
        if address is None and (notebook := sys.modules.get("scaler_jupyter.jupyter.session")):
            address, keys = notebook.default_cluster() or (None, keys)  # after `%scaler start`: its cluster
        if keys is None and address is not None and address == task_context.scheduler_address():
            keys = task_context.keys_directory()
        self._keys = load_keys(keys)  # a missing key file is reported here, before anything starts
        if address is None:
            from scaler_jupyter.cluster import LocalCluster

            self._cluster = LocalCluster(n_workers=os.cpu_count() or 1, keys=keys, log_level=log_level)
            address = self._cluster.address
        self.address = address
        self.serializer = serializer
        self.store_tasks = store_tasks
        self.timeout = timeout
        self._name = name or f"client-{os.getpid()}"
        self._function_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._request_ids = itertools.count(1)
        self._graph_ids = itertools.count(1)
        self._listeners: list[ResultListener] = []
        self._by_value: dict[str, types.ModuleType] = {}  # registered modules, shipped again after a reconnect
        self._closed = False
        try:
            self._connect()
        except BaseException:
            if self._cluster is not None:
                self._cluster.close()
            raise

    def _connect(self) -> None:
        """Join the scheduler as a new client: a connection, a client number, nothing sent yet."""
        self._lost: ConnectionLostError | None = None  # why the scheduler is out of reach, once it is
        self._sent_objects: set[bytes] = set()
        self._deleted_objects: set[bytes] = set()  # deleted by this client: a task using one fails at submit
        self._environment = CallerEnvironment(lambda obj: self._put(serialization.dumps(obj)))
        # segments sent and not yet taken by the scheduler; none are made before its welcome says it is here
        self._segments = shared_memory.SegmentHolder()
        self._shares_host = False
        self._status_replies: dict[int, concurrent.futures.Future] = {}
        self._shutdown_reply: concurrent.futures.Future | None = None
        self._cluster_stopped = False  # the scheduler said it stops: nothing more can reach it
        self._welcome: concurrent.futures.Future = concurrent.futures.Future()
        self._task_ids: Iterator[int] | None = None
        self._delivery = Delivery(self.serializer)
        for listener in self._listeners:
            self._delivery.add_listener(listener)
        from scaler_jupyter.cluster import local_address_of  # here: the cluster module starts processes

        local = local_address_of(self.address)
        try:
            self._connection = self._connect_to(local)
        except ConnectionError:
            if local == self.address:
                raise
            self._connection = self._connect_to(self.address)  # the local link is gone: the cluster may be too
        host_id = shared_memory.host_id()
        self._connection.send(ClientHello(PROTOCOL_VERSION, self._name, socket.gethostname(), os.getpid(),
                                          self.store_tasks, host_id))
        self._serializer_id = self._put(serialization.dumps(self.serializer)) if self.serializer is not None else None
        try:
            welcome = self._welcome.result(self.timeout)
        except concurrent.futures.TimeoutError:
            failure = self._connection.handshake_failure
            self._close_connection(stop_cluster=False)
            if failure is not None:
                raise TimeoutError(f"could not join the scheduler at {self.address} within {self.timeout:g}s: "
                                   f"{failure}") from None
            raise TimeoutError(f"no scheduler answered at {self.address} within {self.timeout:g}s: "
                               "is `scaler-jupyter scheduler` running there?") from None
        except BaseException:
            self._close_connection(stop_cluster=False)
            raise
        # task ids are unique across clients: the scheduler's number for this client, then a counter
        self._task_ids = itertools.count(welcome.client_number << TASK_ID_BITS)
        self.client_number = welcome.client_number
        self._shares_host = bool(host_id) and welcome.host_id == host_id
        for module in self._by_value.values():  # a new scheduler session holds none of the old objects
            self._environment.register_by_value(module)

    # -- the Executor contract -----------------------------------------------

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a worker; return its future."""
        return self.submit_with(fn, args, kwargs)

    def submit_with(self, fn: Callable, args: tuple = (), kwargs: dict | None = None, *,
                    tags: Iterable[str] | None = None, priority: int = 0) -> Future:
        """Like :meth:`submit`, with the task's needs: run only on workers with all ``tags``; higher
        ``priority`` runs first."""
        self._check_open()
        spec = self._spec(fn, args, kwargs or {}, self._shared_by_tasks(fn, self._function_id(fn),
                                                                       sorted(tags or ()), priority))
        future = Future(spec.task_id, self._cancel)
        self._delivery.watch((spec.task_id,), future)
        self._connection.send(Submit([], [spec]))
        return future

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1, buffersize: int | None = None) -> Iterator:
        """Like ``Executor.map``: yields results in order, and holds none it has yielded.

        Every call is submitted at once, the function shipped once and the calls in
        batches; with ``buffersize`` (as in Python 3.14), the iterables are read lazily
        and at most that many calls run or wait ahead of the result last yielded, so a
        map over many large results keeps only that window in memory. ``chunksize``
        groups that many calls into one task, for very short functions.
        """
        if buffersize is not None and (not isinstance(buffersize, int) or buffersize < 1):
            raise ValueError("buffersize must be None or a positive integer")
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        calls: Iterator[tuple] = zip(*iterables)  # noqa: B905 - stops at the shortest, as Executor.map
        task_fn = fn
        if chunksize > 1:
            calls = ((fn, chunk) for chunk in _chunks(calls, chunksize))
            task_fn = _run_chunk
        function_id = self._function_id(task_fn)
        results = OrderedResults(self._cancel_many)

        def submit(count: int | None) -> None:
            """Submit the next ``count`` calls (every one left if None), in batches."""
            self._check_open()  # a window refilled after shutdown, or once the scheduler is lost, raises
            shared = self._shared_by_tasks(task_fn, function_id, [], 0)
            specs: list[TaskSpec] = []
            weight = 0
            try:
                for args in itertools.islice(calls, count):
                    spec = self._spec(task_fn, args, {}, shared)
                    specs.append(spec)
                    weight += spec.args.nbytes
                    if len(specs) == _BATCH or weight >= _BATCH_BYTES:
                        self._send_map_batch(specs, results)
                        specs, weight = [], 0
            except BaseException:  # an argument that cannot be serialized: what was sent is cancelled
                self._send_map_batch(specs, results)
                results.close()
                raise
            self._send_map_batch(specs, results)

        submit(buffersize)
        refill = None if buffersize is None else functools.partial(submit, 1)
        iterator = results.iterate(deadline, flatten=chunksize > 1, refill=refill)
        if "ipykernel" in sys.modules:  # in a notebook, a bar once the map runs long
            from scaler_jupyter.jupyter.progress import map_progress

            iterator = map_progress(iterator, len(results) if buffersize is None and chunksize == 1 else None)
        return iterator

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the client (and its private cluster) once pending tasks are done, as ``Executor.shutdown``.

        New submissions fail at once. With ``cancel_futures`` pending tasks are cancelled;
        with ``wait=False`` this returns at once and pending futures still complete.
        """
        if self._closed:
            return
        self._closed = True
        if cancel_futures:
            pending = self._delivery.pending()
            self._delivery.cancel_all()
            if pending:
                self._connection.send(Cancel(pending))

        def close_when_done() -> None:
            self._delivery.wait_idle()
            self._close_connection()

        if wait:
            close_when_done()
        else:
            threading.Thread(target=close_when_done, name="scaler-jupyter-shutdown", daemon=True).start()

    def _close_connection(self, stop_cluster: bool = True) -> None:
        self._connection.close(ClientBye(), linger=not self._cluster_stopped)
        self._segments.release_all()  # what the scheduler has not taken yet it never will
        self._delivery.close()
        if stop_cluster and self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    # -- beyond the Executor -------------------------------------------------

    def get(self, dsk: Any, keys: Any, block: bool = True, *, timeout: float | None = None,
            name: str | None = None, **dask_options: Any) -> Any:
        """Run a Dask-format task graph on the cluster; return the values of ``keys``, as ``dask.get`` does.

        ``keys`` is a key, or nested lists of keys; the values come back in that shape with each
        list a tuple, as Dask's own schedulers return them (``[["a", "b"]]`` gives ``((1, 2),)``).
        The graph is culled to what they need and checked first: a cycle or a missing key raises
        :class:`~scaler_jupyter.errors.GraphError` with nothing started. The scheduler runs each
        task once its dependencies are done and keeps intermediate results only while a task still
        needs them; only the values of ``keys`` come back. The first task to fail cancels the rest,
        and its exception is raised here with the remote traceback. With ``block=False``, futures in that shape.

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
        submission = graph_message.build(plan, next(self._graph_ids), name, self._task_ids.__next__,
                                         self._function_id, self.serializer, self._serializer_id,
                                         self._deleted_objects, task_context.current_task_id,
                                         self._environment.ids())
        task_ids = submission.task_ids
        run = GraphRun(list(task_ids.values()), self._end_graph)
        futures: dict[Any, Future] = {}
        for key in plan.outputs:
            if key in task_ids:
                futures[key] = run.future_for(task_ids[key])
            else:  # a literal asked for as it is: nothing to run
                futures[key] = Future(-1, lambda _: None)
                futures[key].set_result(submission.literals[key])
        if task_ids:
            self._delivery.watch(run.task_ids, run)
            if self._shares_host:
                for spec in submission.message.tasks:
                    spec.args = self._segments.share(spec.args)
                for obj in submission.message.objects:
                    obj.payload = self._segments.share(obj.payload)
            self._connection.send(submission.message)
            # the tasks hold the literals now; this client's claim goes, unless it sent one itself (send_object)
            objects = submission.message.objects
            unclaimed = [obj.object_id for obj in objects if obj.object_id not in self._sent_objects]
            if unclaimed:
                self._connection.send(DeleteObjects(unclaimed))
        return futures

    def send_object(self, obj: Any) -> ObjectRef:
        """Store ``obj`` on the scheduler once; pass the returned reference as an argument to many tasks."""
        self._check_open()
        try:
            payload = serialization.dumps(obj, self.serializer)
        except Exception as exc:
            message = f"send_object: the {type(obj).__name__} object could not be serialized: {exc}"
            raise SerializationError(message) from exc
        return ObjectRef(self._put(payload), payload.nbytes)

    def register_by_value(self, module: types.ModuleType) -> None:
        """Ship ``module`` (a module or a whole package, as source) to every worker that runs a task of this
        client from now on, so that tasks import it there, on hosts where it is not installed.

        As ``cloudpickle.register_pickle_by_value``, for every task rather than one pickle. Registering it
        again after editing its files ships the new code, and workers unload the old.
        """
        self._check_open()
        self._environment.register_by_value(module)
        self._by_value[module.__name__] = module

    def delete_object(self, ref: ObjectRef) -> None:
        """Free an object stored with :meth:`send_object`; a task given ``ref`` afterwards fails at submit."""
        self._sent_objects.discard(ref.object_id)
        self._deleted_objects.add(ref.object_id)
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

    def reconnect(self) -> None:
        """Join the scheduler again after losing it (the scheduler dropped this client, or restarted).

        The client gets a new number; what was pending and the objects it stored are
        gone (send them again); functions are sent again as tasks need them.
        """
        if self._closed:
            raise RuntimeError("cannot reconnect a client after shutdown")
        if self._lost is None:
            return
        self._close_connection(stop_cluster=False)
        self._connect()

    def add_result_listener(self, listener: ResultListener) -> None:
        """Call ``listener(task_id, state)`` for every task result this client receives, duplicates included,
        before the task's future (or ``map``, or graph) hears of it; from the client's delivery thread, so it
        must return quickly. For progress displays and tests."""
        self._listeners.append(listener)
        self._delivery.add_listener(listener)

    def remove_result_listener(self, listener: ResultListener) -> None:
        self._listeners.remove(listener)
        self._delivery.remove_listener(listener)

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._lost is not None:
            state = "disconnected"
        else:
            state = f"{len(self._delivery.pending())} pending"
        return f"<Client {self.address} {state}>"

    # -- internals -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._lost is not None:
            raise ConnectionLostError(str(self._lost))

    def _put(self, payload) -> bytes:
        """Store ``payload`` on the scheduler once. It is queued before it is marked sent, so a task another
        thread submits as soon as it sees the mark always reaches the scheduler after the object."""
        object_id = serialization.content_id(*payload.parts)
        if object_id not in self._sent_objects:
            if self._shares_host:
                payload = self._segments.share(payload)
            self._connection.send(PutObjects([ObjectSpec(object_id, payload)]))
            self._sent_objects.add(object_id)
            self._deleted_objects.discard(object_id)
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

    def _send_map_batch(self, specs: list[TaskSpec], results: OrderedResults) -> None:
        """Give a batch of a map's tasks their slots and their sink, then send it (an empty one is not)."""
        if specs:
            task_ids = [spec.task_id for spec in specs]
            results.add(task_ids)
            self._delivery.watch(task_ids, results)
            self._connection.send(Submit([], specs))

    def _shared_by_tasks(self, fn: Callable, function_id: bytes, tags: list[str], priority: int) -> _SharedFields:
        """The fields of every task of one call (a submit, a map's submission): worked out once for all."""
        return _SharedFields(function_id, self._serializer_id, tags, priority, task_context.current_task_id,
                             self._environment.ids(), task_origin.current,
                             getattr(fn, "__qualname__", type(fn).__name__))

    def _spec(self, fn: Callable, args: tuple, kwargs: dict, shared: _SharedFields) -> TaskSpec:
        try:
            payload, refs = serialization.dumps_collecting_refs((args, kwargs), self.serializer)
        except Exception as exc:
            raise SerializationError(_which_argument_fails(fn, args, kwargs, self.serializer, exc)) from exc
        if self._deleted_objects and not self._deleted_objects.isdisjoint(refs):
            raise DeletedObjectError(_which_argument_is_deleted(fn, args, kwargs, self._deleted_objects))
        if self._shares_host:
            payload = self._segments.share(payload)
        return TaskSpec(next(self._task_ids), shared.function_id, payload, refs, shared.serializer_id, shared.tags,
                        shared.priority, shared.parent_id, shared.environment, shared.origin, shared.name)

    def _cancel(self, task_id: int) -> None:
        self._cancel_many([task_id])

    def _cancel_many(self, task_ids: list[int]) -> None:
        self._delivery.forget(task_ids)
        self._connection.send(Cancel(task_ids))  # dropped if the connection is already closed

    def _end_graph(self, task_ids: list[int], cancel: bool) -> None:
        """A graph run is over: no more results come for its tasks (with ``cancel``, none are wanted)."""
        if cancel:
            self._cancel_many(task_ids)
        else:
            self._delivery.forget(task_ids)

    # -- in the I/O thread ---------------------------------------------------

    def _on_message(self, message) -> None:
        if isinstance(message, Results):
            self._map_results(message)
            self._delivery.post(message)
        elif isinstance(message, Output):
            self._delivery.post(message)
        elif isinstance(message, ReleaseSegments):  # the scheduler holds what we sent: our hold goes
            self._segments.release(message.inodes)
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
            self._on_lost(f"the scheduler at {self.address} shut down: {message.reason}", reconnectable=False)
            if self._shutdown_reply is not None and not self._shutdown_reply.done():
                self._shutdown_reply.set_result(message.reason)
        elif isinstance(message, Rejected):
            shutdown_reply = self._shutdown_reply
            if shutdown_reply is not None and not shutdown_reply.done():  # the answer to shutdown_cluster()
                shutdown_reply.set_exception(ShutdownRefusedError(
                    f"the scheduler at {self.address} refused to shut down: {message.reason}"))
            elif not self._welcome.done():  # it refuses a hello only for its protocol version
                self._welcome.set_exception(ProtocolError(f"the scheduler at {self.address} refused this client: "
                                                          f"{message.reason}"))
            else:  # it dropped us (declared us gone): our tasks are cancelled there
                self._on_lost(f"the scheduler at {self.address} dropped this client: {message.reason}")

    def _map_results(self, message: Results) -> None:
        """Map the results' shared-memory parts now, and tell the scheduler it may let them go: the caller's
        values then live in this process's own mappings, whatever becomes of the scheduler."""
        held: list[int] = []
        for result in message.results:
            inodes = shared_memory.inodes(result.payload)
            if inodes:  # one that cannot be mapped fails to load, saying why; the scheduler's hold goes all the same
                result.payload = shared_memory.materialize(result.payload)[0]
                held.extend(inodes)
        if held:
            self._connection.send(ReleaseSegments(held))

    def _connect_to(self, address: str) -> Connection:
        return Connection(address, self._on_message, self._on_lost, silence_timeout=self.timeout, keys=self._keys,
                          on_refused=self._on_refused)

    def _on_refused(self, reason: str) -> None:
        """The scheduler refused our security handshake, as it will every retry."""
        if not self._welcome.done():
            self._welcome.set_exception(AuthenticationError(f"cannot join the scheduler at {self.address}: {reason}"))
        else:  # it changed keys under us: what is pending fails when it is found silent
            logger.error("the scheduler at %s refused this client on reconnecting: %s", self.address, reason)

    def _on_lost(self, reason: str, reconnectable: bool = True) -> None:
        """The scheduler is out of reach: say so on every pending and later call, and how to go on."""
        if self._lost is not None:
            return
        if not self._welcome.done():  # still joining: the constructor (or reconnect) raises, saying why
            self._lost = ConnectionLostError(reason)
            self._welcome.set_exception(self._lost)
            return
        if reconnectable:
            reason += ("; this client's pending tasks and stored objects are gone: call client.reconnect() "
                       "to join the scheduler again")
        self._lost = ConnectionLostError(reason)
        self._segments.release_all()
        logger.log(logging.WARNING if reconnectable else logging.INFO, "%s", reason)
        self._delivery.post_lost(self._lost)
        for reply in list(self._status_replies.values()):
            if not reply.done():
                reply.set_exception(ConnectionLostError(reason))


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


def _which_argument_is_deleted(fn: Callable, args: tuple, kwargs: dict, deleted: set[bytes]) -> str:
    """Name the argument that holds a reference to an object this client deleted."""
    name = getattr(fn, "__qualname__", type(fn).__name__)
    named = [(f"argument {i}", value) for i, value in enumerate(args)]
    named += [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]
    advice = "send it again with send_object() and pass the new reference"
    for label, value in named:
        if not deleted.isdisjoint(serialization.dumps_collecting_refs(value)[1]):
            return f"{label} of {name}() refers to an object deleted with delete_object(): {advice}"
    return f"an argument of {name}() refers to an object deleted with delete_object(): {advice}"
