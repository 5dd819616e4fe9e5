"""``@delayed`` and ``@graph``: plain functions when called, graphs when traced.

Called outside a trace, a decorated function runs at once, so a decorated program
is plain Python and its tests need no cluster. ``fn.to_graph(...)`` traces it
instead: the arguments given are bound as constants (so control flow may depend
on them), the others become the graph's inputs. Inside a trace, a ``@delayed``
call adds a node and a ``@graph`` call adds a subgraph.

The wrappers are plain functions with the wrapped one's name, so pickle finds a
module-level decorated function by reference (a process pool can run it), and
cloudpickle sends one defined in a notebook or another function by value.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, get_args, get_origin

from scaler_jupyter.pargraph import tracer
from scaler_jupyter.pargraph.model import MISSING, Graph


class Result:
    """Names an output in a return annotation: ``-> Annotated[str, Result("report")]``."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a Result needs a non-empty name, not {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"Result({self.name!r})"


def output_names(function: Callable) -> tuple[tuple[str, ...], bool]:
    """The names of ``function``'s outputs, and whether it returns them as a tuple (a tuple annotation).

    Unnamed outputs are ``result``, or ``result_0``, ``result_1``... in a tuple.
    """
    try:
        annotation = inspect.signature(function, eval_str=True).return_annotation
    except (NameError, TypeError, SyntaxError):  # an annotation that names what is not importable here
        annotation = inspect.signature(function).return_annotation
    if get_origin(annotation) is tuple and get_args(annotation) and Ellipsis not in get_args(annotation):
        names = tuple(_name_of(item, f"result_{i}") for i, item in enumerate(get_args(annotation)))
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{function.__qualname__} names two outputs {duplicates[0]!r}: output names must differ")
        return names, True
    return (_name_of(annotation, "result"),), False


def _name_of(annotation: Any, default: str) -> str:
    if get_origin(annotation) is not Annotated:
        return default
    results = [meta for meta in annotation.__metadata__ if isinstance(meta, Result)]
    if len(results) > 1:
        raise ValueError(f"{annotation} has {len(results)} Result annotations: give one name per output")
    return results[0].name if results else default


def delayed(function: Callable) -> Callable:
    """Make ``function`` a node of graphs traced from ``@graph`` functions; called normally, it just runs.

    Its parameters are named, or only ``*args``: a node's arguments are positions or names, and
    ``**kwargs`` or ``*args`` beside named parameters would make the graph's edges ambiguous (as in Citi's).
    """
    names, multiple = output_names(function)
    signature = inspect.signature(function)
    kinds = [parameter.kind for parameter in signature.parameters.values()]
    if inspect.Parameter.VAR_KEYWORD in kinds or (inspect.Parameter.VAR_POSITIONAL in kinds and len(kinds) > 1):
        raise ValueError(f"@delayed {function.__qualname__}: take named parameters, or only *args "
                         "(not **kwargs, nor *args beside named parameters)")

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        builder = tracer.current()
        if builder is None:
            return function(*args, **kwargs)
        return builder.call(wrapper, args, kwargs, function.__name__, len(names) if multiple else 1)

    def to_graph(*args: Any, **kwargs: Any) -> Graph:
        """A graph of this one call; the arguments given are constants, the others inputs."""
        bound, inputs = _split(signature, args, kwargs, function)
        builder = tracer.Builder(function.__name__)
        call_args, call_kwargs = _call_arguments(signature, bound, {n: builder.input(n, d) for n, d in inputs})
        with tracer.tracing(builder):
            value = wrapper(*call_args, **call_kwargs)
        return builder.graph(dict(zip(names, value if multiple else (value,), strict=True)), multiple)

    wrapper.to_graph = to_graph
    wrapper.pargraph_kind = "delayed"
    return wrapper


def graph(function: Callable) -> Callable:
    """Make ``function`` traceable into a :class:`Graph` (``fn.to_graph(...)``); called normally, it just runs.

    Its parameters are the graph's inputs, so they must be named (no ``*args`` or ``**kwargs``).
    """
    names, multiple = output_names(function)
    signature = inspect.signature(function)
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ValueError(f"@graph {function.__qualname__}: *{parameter.name} cannot be a graph input; "
                             "name each parameter")

    def trace(args: tuple, kwargs: dict, bind_traced: bool) -> tuple[Graph, list]:
        """Trace the body; with ``bind_traced`` (a nested call), arguments that are traced values of the outer
        graph become inputs, and return them so the caller can wire them in."""
        if bind_traced:
            arguments = signature.bind(*args, **kwargs)
            arguments.apply_defaults()
            outer_builder = tracer.current()
            values = {n: outer_builder.proxy(v) if tracer.holds_traced(v) else v
                      for n, v in arguments.arguments.items()}
            bound = {n: v for n, v in values.items() if not isinstance(v, tracer.Proxy)}
            inputs = [(n, MISSING) for n, v in values.items() if isinstance(v, tracer.Proxy)]
            outer = [values[n] for n, _ in inputs]
        else:
            bound, inputs = _split(signature, args, kwargs, function)
            outer = []
        builder = tracer.Builder(function.__name__)
        call_args, call_kwargs = _call_arguments(signature, bound, {n: builder.input(n, d) for n, d in inputs})
        with tracer.tracing(builder):
            value = function(*call_args, **call_kwargs)
        if multiple:
            if not isinstance(value, tuple) or len(value) != len(names):
                raise ValueError(f"{function.__qualname__} is annotated with {len(names)} outputs "
                                 f"({', '.join(names)}) but returned {_describe(value)}")
            outputs = dict(zip(names, value, strict=True))
        else:
            outputs = {names[0]: value}
        return builder.graph(outputs, multiple), outer

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        builder = tracer.current()
        if builder is None:
            return function(*args, **kwargs)
        subgraph, outer = trace(args, kwargs, bind_traced=True)
        count = len(subgraph.outputs) if multiple else 1
        return builder.call(None, tuple(outer), {}, function.__name__, count, subgraph=subgraph)

    def to_graph(*args: Any, **kwargs: Any) -> Graph:
        """Trace without running anything. The arguments given are constants (control flow may depend on
        them); the others become the graph's inputs, with their defaults."""
        return trace(args, kwargs, bind_traced=False)[0]

    wrapper.to_graph = to_graph
    wrapper.pargraph_kind = "graph"
    return wrapper


def _split(signature: inspect.Signature, args: tuple, kwargs: dict,
           function: Callable) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """The arguments given (by parameter name), and the parameters left unbound with their defaults."""
    try:
        bound = signature.bind_partial(*args, **kwargs).arguments
    except TypeError as exc:
        raise TypeError(f"{function.__qualname__}.to_graph: {exc}") from None
    inputs = []
    for name, parameter in signature.parameters.items():
        if name in bound:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = MISSING if parameter.default is parameter.empty else parameter.default
        inputs.append((name, default))
    return dict(bound), inputs


def _call_arguments(signature: inspect.Signature, bound: dict, traced: dict) -> tuple[list, dict]:
    """Positional and keyword arguments for a call where every parameter has a value (bound or traced)."""
    args: list = []
    kwargs: dict = {}
    for name, parameter in signature.parameters.items():
        if name in bound:
            value = bound[name]
        elif name in traced:
            value = traced[name]
        else:
            continue
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            args.append(value)
        elif parameter.kind is parameter.VAR_POSITIONAL:
            args.extend(value)
        elif parameter.kind is parameter.VAR_KEYWORD:
            kwargs.update(value)
        else:
            kwargs[name] = value
    return args, kwargs


def _describe(value: Any) -> str:
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"one {type(value).__name__}" if not isinstance(value, tracer.Proxy) else "one value"
