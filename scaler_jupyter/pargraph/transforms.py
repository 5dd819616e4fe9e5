"""What a Graph becomes without running: culled, renamed by content, flattened, fused.

Each transform takes a :class:`~scaler_jupyter.pargraph.model.Graph` and returns a new one (graphs
are never changed in place), with the same outputs for the same inputs.
"""

from __future__ import annotations

import dataclasses
import json

from scaler_jupyter.pargraph import identity
from scaler_jupyter.pargraph.calls import Chain, Stage
from scaler_jupyter.pargraph.model import Graph, Node, Ref, RefKind


def cull(graph: Graph) -> Graph:
    """Without the nodes and constants no output needs (inputs stay: they are the graph's signature)."""
    needed: set[str] = set()
    stack = [ref for ref in graph.outputs.values()]
    consts: set[str] = set()
    while stack:
        ref = stack.pop()
        if ref.kind == RefKind.CONST:
            consts.add(ref.name)
        elif ref.kind == RefKind.NODE and ref.name not in needed:
            needed.add(ref.name)
            stack.extend(graph.nodes[ref.name].refs())
    return dataclasses.replace(
        graph,
        consts={k: v for k, v in graph.consts.items() if k in consts},
        nodes={k: (dataclasses.replace(n, subgraph=cull(n.subgraph)) if n.subgraph else n)
               for k, n in graph.nodes.items() if k in needed},
    )


def stabilize(graph: Graph) -> Graph:
    """Rename constants and nodes from their content, so that tracing the same program twice gives equal
    graphs (trace-time names count calls, which differ from one trace to the next)."""
    renamed: dict[Ref, Ref] = {}
    consts = {}
    for name, value in graph.consts.items():
        new = f"const-{identity.digest(identity.value_bytes(value))}"
        consts[new] = value
        renamed[Ref(RefKind.CONST, name)] = Ref(RefKind.CONST, new)

    def rename(ref: Ref) -> Ref:
        if ref.kind == RefKind.NODE:
            return Ref(RefKind.NODE, renamed[Ref(RefKind.NODE, ref.name)].name, ref.index)
        return renamed.get(ref, ref)

    nodes = {}
    for node in graph.nodes.values():
        args = tuple(rename(r) for r in node.args)
        kwargs = tuple((k, rename(r)) for k, r in node.kwargs)
        subgraph = stabilize(node.subgraph) if node.subgraph is not None else None
        content = [node.label, identity.function_name(node.function) if node.function is not None else "",
                   [str(r) for r in args], [(k, str(r)) for k, r in kwargs], node.outputs,
                   identity.fingerprint(subgraph) if subgraph is not None else ""]
        key = f"{node.label}-{identity.digest(json.dumps(content).encode())}"
        while key in nodes:  # the same call twice (a function with side effects): keep both
            key = f"{key}-{len(nodes)}"
        renamed[Ref(RefKind.NODE, node.key)] = Ref(RefKind.NODE, key)
        nodes[key] = dataclasses.replace(node, key=key, args=args, kwargs=kwargs, subgraph=subgraph)
    outputs = {name: rename(ref) for name, ref in graph.outputs.items()}
    return dataclasses.replace(graph, consts=consts, nodes=nodes, outputs=outputs)


def explode_subgraphs(graph: Graph) -> Graph:
    """The same graph with every nested ``@graph`` call replaced by its nodes (recursively)."""
    if not any(node.subgraph is not None for node in graph.nodes.values()):
        return graph
    consts = dict(graph.consts)
    nodes: dict[str, Node] = {}
    mapped: dict[str, list[Ref]] = {}  # a subgraph node's key -> the refs of its outputs

    def rename(ref: Ref) -> Ref:
        if ref.kind == RefKind.NODE and ref.name in mapped:
            outs = mapped[ref.name]
            return outs[0 if ref.index is None else ref.index]
        return ref

    for node in graph.nodes.values():
        args = tuple(rename(r) for r in node.args)
        kwargs = tuple((k, rename(r)) for k, r in node.kwargs)
        if node.subgraph is None:
            nodes[node.key] = dataclasses.replace(node, args=args, kwargs=kwargs)
            continue
        inner = explode_subgraphs(node.subgraph)
        prefix = f"{node.key}/"
        bound = dict(zip(inner.inputs, args, strict=False))
        bound.update(kwargs)

        def inner_ref(ref: Ref, prefix=prefix, bound=bound, inner=inner) -> Ref:
            if ref.kind == RefKind.INPUT:
                if ref.name in bound:
                    return bound[ref.name]
                default_key = f"{prefix}{ref.name}"
                consts[default_key] = inner.inputs[ref.name].default
                return Ref(RefKind.CONST, default_key)
            return Ref(ref.kind, prefix + ref.name, ref.index)

        for name, value in inner.consts.items():
            consts[prefix + name] = value
        for inner_node in inner.nodes.values():
            key = prefix + inner_node.key
            nodes[key] = dataclasses.replace(
                inner_node, key=key, args=tuple(inner_ref(r) for r in inner_node.args),
                kwargs=tuple((k, inner_ref(r)) for k, r in inner_node.kwargs))
        mapped[node.key] = [inner_ref(ref) for ref in inner.outputs.values()]
    outputs = {name: rename(ref) for name, ref in graph.outputs.items()}
    return dataclasses.replace(graph, consts=consts, nodes=nodes, outputs=outputs)


def fuse_sequential(graph: Graph) -> Graph:
    """Merge each chain of calls where a node's only consumer is the next node, and that node reads no other
    node: one task instead of many, for chains of small steps."""
    graph = explode_subgraphs(graph)
    consumers: dict[str, int] = {}
    for node in graph.nodes.values():
        for ref in node.refs():
            if ref.kind == RefKind.NODE:
                consumers[ref.name] = consumers.get(ref.name, 0) + 1
    for ref in graph.outputs.values():
        if ref.kind == RefKind.NODE:
            consumers[ref.name] = consumers.get(ref.name, 0) + 2  # an output is never fused away

    def fusable_into(node: Node) -> str | None:
        """The node ``node`` would absorb: its single node argument, if nothing else reads it."""
        upstream = {ref.name for ref in node.refs() if ref.kind == RefKind.NODE}
        if len(upstream) != 1 or node.outputs != 1:
            return None
        [name] = upstream
        before = graph.nodes[name]
        if consumers.get(name) != 1 or before.outputs != 1 or any(r.kind == RefKind.NODE and r.index is not None
                                                                    for r in node.refs()):
            return None
        return name

    nodes: dict[str, Node] = {}
    for node in graph.nodes.values():
        name = fusable_into(node)
        if name is None or name not in nodes:
            nodes[node.key] = node
            continue
        before = nodes.pop(name)
        stages = before.function.stages if isinstance(before.function, Chain) else (
            Stage(before.function, tuple(("arg", i) for i in range(len(before.args))),
                  tuple((k, ("arg", len(before.args) + i)) for i, (k, _) in enumerate(before.kwargs))),)
        refs = [*before.args, *(r for _, r in before.kwargs)]
        slots = []
        for ref in node.args:
            if ref.kind == RefKind.NODE:
                slots.append(("previous",))
            else:
                refs.append(ref)
                slots.append(("arg", len(refs) - 1))
        kwarg_slots = []
        for k, ref in node.kwargs:
            if ref.kind == RefKind.NODE:
                kwarg_slots.append((k, ("previous",)))
            else:
                refs.append(ref)
                kwarg_slots.append((k, ("arg", len(refs) - 1)))
        chain = Chain((*stages, Stage(node.function, tuple(slots), tuple(kwarg_slots))))
        nodes[node.key] = Node(node.key, f"{before.label}+{node.label}", chain, tuple(refs))
    return dataclasses.replace(graph, nodes=nodes)
