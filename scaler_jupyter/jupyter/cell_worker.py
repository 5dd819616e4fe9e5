"""The worker's side of ``%%scaler``: run a cell's code in a namespace of its own, send back what it binds.

Imported by processors, so it imports nothing of IPython (``display`` does, lazily,
and only if a cell calls it).

Values travel *packed*: pickled by the project's one rule
(:func:`scaler_jupyter.protocol.serialization.dumps`), the stream as bytes and each
large buffer as a :class:`pickle.PickleBuffer`, which the engine then carries
out-of-band without a copy. Packing on the sending side, rather than leaving it to
the engine, is what lets each side name a value that cannot travel (the notebook
before anything is sent; the worker for a result, which it leaves out with a
warning instead of failing a cell that ran), and lets a ``--map`` run unpack its own
fresh copy of the values all its runs share.
"""

from __future__ import annotations

import ast
import base64
import builtins
import dataclasses
import functools
import json
import linecache
import pickle
import sys
import traceback
import types
from typing import Any

from scaler_jupyter import task_context
from scaler_jupyter.protocol import Payload, serialization

Packed = tuple[bytes, tuple[pickle.PickleBuffer, ...]]
DISPLAY_STREAM = "display"  # the Output stream a cell's display() calls travel on, as JSON mime bundles
TRACEBACK_ATTRIBUTE = "_scaler_cell_traceback"  # set on a cell's exception: its traceback, in the cell's lines


@dataclasses.dataclass(frozen=True, slots=True)
class Cell:
    """A cell as a worker runs it."""

    source: str  # after IPython's transforms; line numbers are the notebook's (the magic's line is blank)
    filename: str  # ``Cell In[5]``: how tracebacks name it, as IPython's own do
    returns: tuple[str, ...]  # the names to send back, if the cell binds them
    last_expression: bool  # evaluate the last statement as an expression and send its value back


def pack(value: Any) -> Packed:
    """``value`` as a pickle stream and its out-of-band buffers; raises what pickling raises."""
    payload = serialization.dumps(value)
    stream, *buffers = payload.parts
    return bytes(stream), tuple(pickle.PickleBuffer(buffer) for buffer in buffers)


def unpack(packed: Packed, copy: bool = False) -> Any:
    """The value :func:`pack` packed. Its arrays are writable, over the received buffers where they are
    writable already, else (or with ``copy``, for a value unpacked more than once) over copies."""
    stream, buffers = packed
    if copy:
        return serialization.loads(Payload([stream, *(bytearray(buffer) for buffer in buffers)]))
    return serialization.loads(Payload([stream, *buffers]), writable=True)


def unpicklable(values: dict[str, Any]) -> tuple[str, Exception] | None:
    """The first name in ``values`` whose value cannot be packed, with the error; None if all can."""
    for name, value in values.items():
        try:
            pack(value)
        except Exception as exc:
            return name, exc
    return None


def run_cell(cell: Cell, values: Packed, extra: Packed | None = None) -> Packed:
    """Run ``cell`` with the notebook's ``values`` (and ``extra``, a ``--map`` item), in a fresh namespace.

    Returns ``{"names": {name: value}, "value": last expression's value}``, packed.
    """
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins, "display": display}
    namespace.update(unpack(values, copy=extra is not None))  # --map: every run of a processor gets its own
    if extra is not None:
        namespace.update(unpack(extra))
    rebind_globals(namespace, namespace)
    body, last = _code(cell.source, cell.filename, cell.last_expression)
    try:
        exec(body, namespace)
        value = eval(last, namespace) if last is not None else None
    except BaseException as exc:
        _attach_cell_traceback(exc, cell.filename)
        raise
    names = {name: namespace[name] for name in cell.returns if name in namespace}
    return _pack_outcome(names, value)


def rebind_globals(values: dict[str, Any], namespace: dict[str, Any]) -> None:
    """Make the notebook's functions (and their classes' methods) among ``values`` look names up in
    ``namespace``, as they do in the notebook.

    Pickled by value, a function arrives with a private copy of the globals it used
    when it was pickled; in a cell that rebinds one of them, or in the notebook once a
    function defined on a worker comes back, it would see stale values.
    """
    for name, value in values.items():
        if isinstance(value, types.FunctionType) and value.__module__ == "__main__":
            values[name] = _rebound(value, namespace)
        elif isinstance(value, type) and value.__module__ == "__main__":
            for attribute, member in list(vars(value).items()):
                if isinstance(member, types.FunctionType):
                    setattr(value, attribute, _rebound(member, namespace))


def _rebound(function: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    if function.__globals__ is namespace:
        return function
    rebound = types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__,
                                 function.__closure__)
    rebound.__kwdefaults__ = function.__kwdefaults__
    rebound.__dict__.update(function.__dict__)
    rebound.__qualname__ = function.__qualname__
    rebound.__module__ = function.__module__
    rebound.__doc__ = function.__doc__
    rebound.__annotations__ = function.__annotations__
    return rebound


def _code(source: str, filename: str, last_expression: bool):
    """The cell's body and its last expression as code named ``filename``, whose lines go to ``linecache``
    so that tracebacks show them. A cell run again (a new ``In [n]``) is renamed, not compiled again."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    body, last = _compiled(source, last_expression)
    return _renamed(body, filename), None if last is None else _renamed(last, filename)


@functools.lru_cache(maxsize=64)
def _compiled(source: str, last_expression: bool):
    tree = ast.parse(source, _UNNAMED)
    last = None
    if last_expression:
        last = compile(ast.Expression(tree.body.pop().value), _UNNAMED, "eval")
    return compile(tree, _UNNAMED, "exec"), last


_UNNAMED = "<cell>"


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    """``code`` and the code of the functions, classes and comprehensions it defines, named ``filename``."""
    consts = tuple(_renamed(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _attach_cell_traceback(exc: BaseException, filename: str) -> None:
    """Keep the traceback from the cell's first frame on: this module's frames mean nothing to the user."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    try:
        setattr(exc, TRACEBACK_ATTRIBUTE, text)
    except AttributeError:  # an exception type without a __dict__: the engine's traceback stands
        pass


def _pack_outcome(names: dict[str, Any], value: Any) -> Packed:
    """The cell's outcome, packed; a value that cannot be pickled stays here, with a warning in the cell."""
    try:
        return pack({"names": names, "value": value})
    except Exception:
        pass
    kept = {}
    for name, item in [*names.items(), (None, value)]:
        try:
            pack(item)
        except Exception as exc:
            label = "the value of the last expression" if name is None else repr(name)
            print(f"%%scaler: {label} stays on the worker: a {type(item).__name__} cannot be pickled "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr)
            item = None if name is None else _MISSING
        if name is None:
            value = item
        elif item is not _MISSING:
            kept[name] = item
    return pack({"names": kept, "value": value})


_MISSING = object()


# -- display() inside a cell ----------------------------------------------------


def display(*objs: Any, **kwargs: Any) -> None:
    """IPython's ``display`` for a cell running on a worker: each object's rich representations are
    computed here and streamed to the notebook, after what the cell printed so far."""
    for obj in objs:
        data, metadata = _format(obj, kwargs.get("raw", False))
        message = json.dumps({"data": data, "metadata": metadata}, default=str)
        if task_context.emit is not None:
            task_context.emit(DISPLAY_STREAM, message)
        else:  # not in a processor (a test calling run_cell directly): show the text
            print(data.get("text/plain", ""))


def _format(obj: Any, raw: bool) -> tuple[dict, dict]:
    if raw:
        return dict(obj), {}
    formatter = _formatter()
    if formatter is None:
        return {"text/plain": repr(obj)}, {}
    data, metadata = formatter.format(obj)
    for mime, value in data.items():  # JSON carries text: binary representations go as base64, as Jupyter's do
        if isinstance(value, bytes):
            data[mime] = base64.b64encode(value).decode("ascii")
    return data, metadata


@functools.lru_cache(maxsize=1)
def _formatter():
    """IPython's formatter, if IPython is installed on the worker; else displays are plain text."""
    try:
        from IPython.core.formatters import DisplayFormatter
    except ImportError:
        return None
    return DisplayFormatter()
