"""Tracing: running a ``@graph`` function on proxies that record what is done to them.

While a :class:`Builder` is active (a context variable), calls of ``@delayed``
functions and operators on :class:`Proxy` values add nodes instead of running.
What Python lets an object decide (arithmetic, comparisons, indexing, attributes,
calls, ``round``, ``abs``, ``divmod``, ``math.floor``...) becomes a node. What
Python insists on knowing at once (``bool``, so ``if``/``and``/``or``/``not``;
``len``, ``int``, ``float``, iteration, ``in``) raises a ``TypeError`` that says
why. Text is the middle case: ``str(x)``, ``format(x, spec)`` and f-strings must
return a real ``str``, so they return one holding a marker, and a string that
reaches a call or an output is split back into literal text and formatted
values, a node that joins them.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

from scaler_jupyter.pargraph import operators
from scaler_jupyter.pargraph.model import MISSING, Graph, Input, Node, Ref, RefKind

_current: contextvars.ContextVar[Builder | None] = contextvars.ContextVar("pargraph_builder", default=None)

# Private-use characters no text has, around a number between case canaries ("m", "M"): a marker that was
# upper- or lower-cased no longer matches, and its leftovers say the text was changed at trace time.
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARKER = re.compile(f"{_MARK_OPEN}m(\\d+)M{_MARK_CLOSE}")


def current() -> Builder | None:
    """The builder of the trace in progress, or None when code runs normally."""
    return _current.get()


@contextlib.contextmanager
def tracing(builder: Builder) -> Iterator[Builder]:
    token = _current.set(builder)
    try:
        yield builder
    finally:
        _current.reset(token)


class Builder:
    """Collects the inputs, constants and nodes of one graph while its function runs on proxies."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inputs: dict[str, Input] = {}
        self.consts: dict[str, Any] = {}
        self.nodes: dict[str, Node] = {}
        self._numbers = itertools.count(1)
        self._markers: dict[int, tuple[Ref, str, str | None]] = {}  # marker -> (value, format spec, conversion)

    def input(self, name: str, default: Any = MISSING) -> Proxy:
        self.inputs[name] = Input(name, default)
        return Proxy(self, Ref(RefKind.INPUT, name))

    def call(self, function: Callable | None, args: tuple, kwargs: dict, label: str, outputs: int = 1,
             implicit: bool = False, subgraph: Graph | None = None) -> Any:
        """Add a node; return its proxy, or a tuple of proxies for a node of several outputs."""
        node = Node(f"{label}-{next(self._numbers)}", label, function, tuple(self.ref(a) for a in args),
                    tuple((k, self.ref(v)) for k, v in kwargs.items()), outputs, subgraph, implicit)
        self.nodes[node.key] = node
        if outputs == 1:
            return Proxy(self, Ref(RefKind.NODE, node.key))
        return tuple(Proxy(self, Ref(RefKind.NODE, node.key, i)) for i in range(outputs))

    def ref(self, value: Any) -> Ref:
        """Where ``value`` comes from in this graph: a proxy's node, or a constant, or a node that builds a
        container or text from traced parts."""
        if isinstance(value, Proxy):
            return value._pg_materialize(self)
        if not holds_traced(value):
            name = f"const-{next(self._numbers)}"
            self.consts[name] = value
            return Ref(RefKind.CONST, name)
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, dict):
            pairs = [item for pair in value.items() for item in pair]
            return self.call(build_dict, tuple(pairs), {}, "dict", implicit=True)._pg_ref
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
            return self.call(type(value), tuple(value), {}, type(value).__name__, implicit=True)._pg_ref
        kind = type(value)
        return self.call(_BUILDERS.get(kind, kind), (*value,), {}, kind.__name__, implicit=True)._pg_ref

    def marker(self, ref: Ref, spec: str, conversion: str | None) -> TracedText:
        number = next(self._numbers)
        self._markers[number] = (ref, spec, conversion)
        return TracedText(f"{_MARK_OPEN}m{number}M{_MARK_CLOSE}")

    def reformat(self, text: str, spec: str) -> TracedText:
        """``format(str(x), spec)``, as in ``f"{x!r:>12}"``: the spec applies to the value's text."""
        match = _MARKER.fullmatch(text)
        entry = self._markers.get(int(match.group(1))) if match else None
        if entry is None or entry[1]:
            raise TypeError("formatting the text of a traced value twice: do it inside a @delayed function")
        return self.marker(entry[0], spec, entry[2])

    def proxy(self, value: Any) -> Proxy:
        """``value`` as a traced value of this graph: a container or text holding traced values becomes the
        node that builds it."""
        return value if isinstance(value, Proxy) else Proxy(self, self.ref(value))

    def _text(self, text: str) -> Ref:
        text = str.__str__(text)  # plain str: TracedText refuses the operations used here
        parts: list = []
        position = 0
        for match in _MARKER.finditer(text):
            if match.start() > position:
                parts.append(text[position:match.start()])
            entry = self._markers.get(int(match.group(1)))
            if entry is None:
                raise TypeError("a traced value's text from another trace was used here")
            ref, spec, conversion = entry
            parts.append(self.call(format_value, (Proxy(self, ref), spec, conversion), {}, "format",
                                   implicit=True))
            position = match.end()
        rest = text[position:]
        if rest:
            parts.append(rest)
        if any(_MARK_OPEN in p or _MARK_CLOSE in p for p in parts if isinstance(p, str)):
            raise TypeError("the text of a traced value was cut or changed while tracing (sliced, or its case "
                            "changed after an f-string): do that inside a @delayed function")
        if len(parts) == 1 and isinstance(parts[0], Proxy):
            return parts[0]._pg_ref
        return self.call(concat, tuple(parts), {}, "concat", implicit=True)._pg_ref

    def graph(self, outputs: dict[str, Any], multiple: bool) -> Graph:
        refs = {name: self.ref(value) for name, value in outputs.items()}
        return Graph(dict(self.inputs), dict(self.consts), dict(self.nodes), refs, multiple, self.name)


def holds_traced(value: Any) -> bool:
    """Whether ``value`` is, or holds, a traced value (in a list, tuple, set, dict, or text)."""
    if isinstance(value, Proxy):
        return True
    if isinstance(value, str):
        return str.__contains__(value, _MARK_OPEN) or str.__contains__(value, _MARK_CLOSE)
    if type(value) in (list, tuple, set, frozenset) or (isinstance(value, tuple) and hasattr(value, "_fields")):
        return any(holds_traced(item) for item in value)
    if type(value) is dict:
        return any(holds_traced(k) or holds_traced(v) for k, v in value.items())
    return False


# -- what implicit nodes run ----------------------------------------------------


@operators.mark_implicit
def build_dict(*pairs: Any) -> dict:
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


@operators.mark_implicit
def build_list(*items: Any) -> list:
    return list(items)


@operators.mark_implicit
def build_tuple(*items: Any) -> tuple:
    return items


@operators.mark_implicit
def build_set(*items: Any) -> set:
    return set(items)


@operators.mark_implicit
def build_frozenset(*items: Any) -> frozenset:
    return frozenset(items)


_BUILDERS: dict[type, Callable] = {list: build_list, tuple: build_tuple, set: build_set,
                                   frozenset: build_frozenset}


@operators.mark_implicit
def format_value(value: Any, spec: str, conversion: str | None) -> str:
    if conversion == "r":
        value = repr(value)
    elif conversion == "s":
        value = str(value)
    return format(value, spec)


@operators.mark_implicit
def concat(*parts: str) -> str:
    return "".join(parts)


@operators.mark_implicit
def call(function: Callable, *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


@operators.mark_implicit
def call_method(obj: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(obj, name)(*args, **kwargs)


# -- text of traced values ------------------------------------------------------


class TracedText(str):
    """What ``str()``, ``repr()`` and ``format()`` of a traced value return: text holding a marker.

    It may be concatenated, joined, put in an f-string and passed on; the marker becomes a node where
    the text is used. Anything that would need the value's real text now (comparing, ``len``, slicing,
    str methods) raises, instead of silently working on the marker.
    """

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        builder = current()
        if not spec or builder is None:
            return str.__str__(self)
        return builder.reformat(self, spec)


def _refuse_text(name: str) -> Callable:
    def refuse(self: TracedText, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{name} on the text of a traced value: the text does not exist until the graph runs. "
                        "Work on it inside a @delayed function.")

    refuse.__name__ = name
    return refuse


for _name in [n for n in vars(str) if not n.startswith("_")] + [
        "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__len__", "__getitem__", "__contains__",
        "__iter__", "__mod__", "__rmod__"]:
    setattr(TracedText, _name, _refuse_text(_name))
TracedText.__hash__ = _refuse_text("__hash__")
TracedText.join = str.join  # "".join([str(x), ...]) joins the parts; the result is plain text with the marker


# -- the proxy ------------------------------------------------------------------


_CONTROL_FLOW = ("Python needs a real {what} here, but this value is traced: it does not exist until the graph "
                 "runs. Control flow and sizes must depend on concrete arguments (bind them with "
                 "to_graph(name=value)), or happen inside a @delayed function.")


class Proxy:
    """A value of the graph being traced. Operations on it add nodes; see the module docstring."""

    __slots__ = ("_pg_attribute", "_pg_builder", "_pg_ref")

    def __init__(self, builder: Builder, ref: Ref | None, attribute: tuple[Proxy, str] | None = None) -> None:
        object.__setattr__(self, "_pg_builder", builder)
        object.__setattr__(self, "_pg_ref", ref)
        object.__setattr__(self, "_pg_attribute", attribute)

    def _pg_materialize(self, builder: Builder) -> Ref:
        if builder is not self._pg_builder:
            raise TypeError("a traced value of one graph was used while tracing another: pass it as an argument")
        if self._pg_ref is None:  # an attribute that was read, not called
            owner, name = self._pg_attribute
            ref = builder.call(operators.get("getattr"), (owner, name), {}, name, implicit=True)._pg_ref
            object.__setattr__(self, "_pg_ref", ref)
        return self._pg_ref

    def _pg_node(self, function: Callable, args: tuple, label: str) -> Proxy:
        return self._pg_builder.call(function, args, {}, label, implicit=True)

    # attributes and calls
    def __getattr__(self, name: str) -> Proxy:
        if name.startswith("__") or name.startswith("_repr_") or name.startswith("_ipython_"):
            raise AttributeError(name)  # protocols probed by Python, NumPy, IPython: not the traced value's
        return Proxy(self._pg_builder, None, (self, name))

    def __call__(self, *args: Any, **kwargs: Any) -> Proxy:
        if self._pg_ref is None:
            owner, name = self._pg_attribute
            return self._pg_builder.call(call_method, (owner, name, *args), kwargs, name, implicit=True)
        return self._pg_builder.call(call, (self, *args), kwargs, "call", implicit=True)

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("a traced value cannot be changed in place; return a new value from a @delayed function")

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError("a traced value cannot be changed in place; return a new value from a @delayed function")

    def __delitem__(self, key: Any) -> None:
        raise TypeError("a traced value cannot be changed in place; return a new value from a @delayed function")

    # what Python must know at once
    def __bool__(self) -> bool:
        raise TypeError("bool() of a traced value (an if, and, or, not, or assert on it). "
                        + _CONTROL_FLOW.format(what="True or False"))

    def __len__(self) -> int:
        raise TypeError("len() of a traced value. " + _CONTROL_FLOW.format(what="int"))

    def __iter__(self):
        raise TypeError("iterating over a traced value (a for loop, or unpacking it). "
                        + _CONTROL_FLOW.format(what="sequence") + " A function of several results unpacks when "
                        "its return annotation is a tuple.")

    def __contains__(self, item: Any) -> bool:
        raise TypeError("`in` on a traced value. " + _CONTROL_FLOW.format(what="True or False"))

    def __int__(self) -> int:
        raise TypeError("int() of a traced value. " + _CONTROL_FLOW.format(what="int"))

    def __float__(self) -> float:
        raise TypeError("float() of a traced value. " + _CONTROL_FLOW.format(what="float"))

    def __complex__(self) -> complex:
        raise TypeError("complex() of a traced value. " + _CONTROL_FLOW.format(what="complex"))

    def __index__(self) -> int:
        raise TypeError("a traced value used as an index or size. " + _CONTROL_FLOW.format(what="int"))

    __hash__ = object.__hash__

    # text: a marker that becomes a node where the text is used
    def __str__(self) -> str:
        return self._pg_builder.marker(self._pg_materialize(self._pg_builder), "", "s")

    def __repr__(self) -> str:
        return self._pg_builder.marker(self._pg_materialize(self._pg_builder), "", "r")

    def __format__(self, spec: str) -> str:
        return self._pg_builder.marker(self._pg_materialize(self._pg_builder), spec, None)

    # numeric protocols Python lets return anything
    def __round__(self, digits: Any = None) -> Proxy:
        return self._pg_node(operators.get("round"), (self,) if digits is None else (self, digits), "round")

    def __floor__(self) -> Proxy:
        return self._pg_node(operators.get("floor"), (self,), "floor")

    def __ceil__(self) -> Proxy:
        return self._pg_node(operators.get("ceil"), (self,), "ceil")

    def __trunc__(self) -> Proxy:
        return self._pg_node(operators.get("trunc"), (self,), "trunc")

    def __divmod__(self, other: Any) -> Proxy:
        return self._pg_node(operators.get("divmod"), (self, other), "divmod")

    def __rdivmod__(self, other: Any) -> Proxy:
        return self._pg_node(operators.get("divmod"), (other, self), "divmod")

    def __pow__(self, other: Any, modulo: Any = None) -> Proxy:
        return self._pg_node(operators.get("pow"), (self, other) if modulo is None else (self, other, modulo), "pow")

    def __rpow__(self, other: Any) -> Proxy:
        return self._pg_node(operators.get("pow"), (other, self), "pow")


def _binary(function: Callable, name: str) -> Callable:
    def method(self: Proxy, other: Any) -> Proxy:
        return self._pg_node(function, (self, other), name)

    return method


def _right(function: Callable, name: str) -> Callable:
    def method(self: Proxy, other: Any) -> Proxy:
        return self._pg_node(function, (other, self), name)

    return method


def _unary(function: Callable, name: str) -> Callable:
    def method(self: Proxy) -> Proxy:
        return self._pg_node(function, (self,), name)

    return method


for _function_name in operators.BINARY:
    _name = _function_name.rstrip("_")
    setattr(Proxy, f"__{_name}__", _binary(operators.get(_function_name), _name))
    setattr(Proxy, f"__r{_name}__", _right(operators.get(_function_name), _name))
for _name in operators.COMPARISONS:
    setattr(Proxy, f"__{_name}__", _binary(operators.get(_name), _name))
for _name in operators.UNARY:
    setattr(Proxy, f"__{_name}__", _unary(operators.get(_name), _name))

