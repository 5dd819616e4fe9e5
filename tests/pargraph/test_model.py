"""The Graph as data: equality and repr, JSON, stabilize, cull, explode_subgraphs, fuse_sequential, DOT, pickling.

Each transformation must keep what the graph computes: the programs and the
transformed graphs are listed in ``CASES`` (model_programs.py) and checked against
their plain calls (here, and on real processes in tests/integration/test_pargraph_backends.py).
"""

from __future__ import annotations

import collections
import json
import pickle
import re

import cloudpickle
import pytest

from scaler_jupyter.pargraph import Graph, GraphEngine, delayed, graph
from scaler_jupyter.pargraph.dask_dict import base_key
from tests.pargraph.cases import check_cases
from tests.pargraph.engine_programs import add, inc
from tests.pargraph.model_programs import (
    CASES,
    chain,
    diamond,
    double,
    from_json,
    halves,
    keeps_an_intermediate,
    label,
    local_program,
    nested,
    note,
    odd_constants,
    offset,
    pipeline,
    splits,
    with_debug,
)

# ---------------------------------------------------------------------------
# The programs of model_programs.py, and their transformed graphs


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_program_and_transformed_graph_here_runs_as_its_plain_call(case, tmp_path):
    check_cases(case, tmp_path)


def run(g: Graph, *args, **kwargs):
    return GraphEngine().get(*g.to_call_dict(*args, **kwargs))


# ---------------------------------------------------------------------------
# Equality and repr


def test_graphs_of_the_same_program_are_equal_and_hash_alike():
    assert diamond.to_graph() == diamond.to_graph()
    assert hash(diamond.to_graph()) == hash(diamond.to_graph())
    assert diamond.to_graph().fingerprint() == diamond.to_graph().fingerprint()


def test_graphs_of_different_programs_or_constants_differ():
    assert diamond.to_graph() != chain.to_graph()
    assert offset.to_graph(k=1) != offset.to_graph(k=2)
    assert offset.to_graph() != offset.to_graph(k=1)
    assert diamond.to_graph() != "a graph"


def test_repr_shows_the_signature_outputs_and_calls():
    assert repr(pipeline.to_graph(y=2)) == ("<Graph pipeline(x) -> (result): 6 nodes "
                                            "[inc, inc, double, add, label, both]>")
    assert repr(keeps_an_intermediate.to_graph()) == ("<Graph keeps_an_intermediate(x) -> (middle, end): 3 nodes "
                                                      "[inc, inc, double]>")
    assert repr(local_program.to_graph()) == "<Graph local(x, y=2) -> (result): 4 nodes [scaled, scaled, add, sub]>"


# ---------------------------------------------------------------------------
# JSON


def test_json_round_trip_of_importable_functions_gives_an_equal_graph():
    for program in (chain, pipeline, nested, splits, keeps_an_intermediate, odd_constants, with_debug):
        g = program.to_graph(debug=True) if program is with_debug else program.to_graph()
        data = g.to_json()
        text = json.dumps(data)  # plain JSON: no custom encoder needed
        assert Graph.from_json(text) == g == Graph.from_json(data), program.__name__
        assert all("import" in node["function"] for node in data["nodes"] if "function" in node)


def test_json_keeps_the_types_of_constants_and_defaults():
    g = from_json(odd_constants.to_graph())
    assert sorted(type(value).__name__ for value in g.consts.values()) == sorted(
        ["tuple", "tuple", "bytes", "set", "Pair", "float", "float", "list"])
    assert from_json(local_program.to_graph()).inputs["y"].default == 2


def test_json_of_subgraphs_nests_them():
    data = nested.to_graph().to_json()
    assert [node["label"] for node in data["nodes"]] == ["diamond", "chain", "add", "pipeline", "tuple"]
    assert data["nodes"][0]["subgraph"]["format"] == "scaler_jupyter.pargraph/1"


def test_a_function_defined_in_a_test_travels_by_value_in_json():
    bias = 100

    @delayed
    def biased(x):
        return x + bias

    @graph
    def program(x):
        return double(biased(x))

    data = json.loads(json.dumps(program.to_graph().to_json()))
    assert "pickle" in data["nodes"][0]["function"] and "import" in data["nodes"][1]["function"]
    assert run(Graph.from_json(data), 1) == 202


def test_a_json_round_trip_of_a_function_pickled_by_value_gives_an_equal_graph():
    g = local_program.to_graph()
    assert from_json(g) == g
    assert cloudpickle.loads(cloudpickle.dumps(local_program)).to_graph() == g


def test_from_json_refuses_other_documents():
    with pytest.raises(ValueError, match="not a pargraph graph"):
        Graph.from_json({"format": "something else"})


# ---------------------------------------------------------------------------
# stabilize


def test_stabilize_makes_two_traces_that_counted_differently_equal():
    with_note = with_debug.to_graph(debug=True).cull()  # the note took a number while tracing
    without = with_debug.to_graph(debug=False)
    assert with_note != without, "trace-time names count calls"
    assert with_note.stabilize() == without.stabilize()
    assert chain.to_graph().stabilize() == chain.to_graph().stabilize()


def test_stabilized_names_come_from_content_not_from_counting():
    g = nested.to_graph().stabilize()
    assert all(re.fullmatch(r"[a-z_]+-[0-9a-f]{16}", key) for key in g.nodes), list(g.nodes)
    assert all(re.fullmatch(r"const-[0-9a-f]{16}", key) for key in pipeline.to_graph().stabilize().consts)
    assert g.stabilize() == g, "stabilize is idempotent"


def test_stabilize_keeps_different_programs_and_constants_apart():
    assert diamond.to_graph().stabilize() != chain.to_graph().stabilize()
    assert offset.to_graph(k=1).stabilize() != offset.to_graph(k=2).stabilize()
    assert offset.to_graph(k=1).stabilize() != offset.to_graph(k=True).stabilize()


def test_stabilize_keeps_two_identical_calls_apart():
    @graph
    def twice(x):
        return add(note(x, "same"), note(x, "same"))

    g = twice.to_graph().stabilize()
    assert len(g.nodes) == 3 and run(g, 1) == twice(1)


# ---------------------------------------------------------------------------
# cull


def test_cull_drops_what_no_output_needs_and_keeps_the_inputs():
    g = with_debug.to_graph(debug=True)
    assert [node.label for node in g.nodes.values()] == ["inc", "note", "double"]
    culled = g.cull()
    assert [node.label for node in culled.nodes.values()] == ["inc", "double"]
    assert "debug" not in culled.consts.values() and "debug" in g.consts.values()
    assert list(culled.inputs) == ["x"] and run(culled, 4) == run(g, 4) == 10


def test_cull_reaches_into_subgraphs_and_keeps_unused_inputs():
    @graph
    def inner(x, unused):
        note(x, "dropped")
        return inc(x)

    @graph
    def program(x):
        return double(inner(x, 0))

    culled = program.to_graph().cull()
    assert [node.label for node in culled.nodes["inner-1"].subgraph.nodes.values()] == ["inc"]
    assert list(culled.nodes["inner-1"].subgraph.inputs) == ["x"]  # ``unused`` was bound: a constant, now gone
    assert run(culled, 1) == 4


# ---------------------------------------------------------------------------
# explode_subgraphs


def test_explode_subgraphs_flattens_and_to_dict_does_it_anyway():
    g = nested.to_graph()
    flat = g.explode_subgraphs()
    assert all(node.subgraph is None for node in flat.nodes.values())
    assert len(flat.nodes) == 16
    assert flat.to_call_dict(3, 4) == g.to_call_dict(3, 4)
    assert chain.to_graph().explode_subgraphs() == chain.to_graph()


def test_task_keys_map_each_flat_node_to_its_dict_key():
    g = nested.to_graph()
    keys = g.task_keys()
    dsk, output = g.to_call_dict(3, 4)
    assert set(keys) == set(g.explode_subgraphs().nodes)
    assert set(keys.values()) <= {base_key(k) for k in dsk} and base_key(output) in keys.values()


# ---------------------------------------------------------------------------
# fuse_sequential


def test_fuse_makes_a_chain_one_task():
    fused = chain.to_graph().fuse_sequential()
    assert [node.label for node in fused.nodes.values()] == ["inc+inc+double+inc"]
    assert run(fused, 1) == chain(1) == 7


def test_fuse_keeps_joins_branches_outputs_and_several_results_apart():
    assert len(diamond.to_graph().fuse_sequential().nodes) == len(diamond.to_graph().nodes) == 4
    fused = pipeline.to_graph().fuse_sequential()
    assert [node.label for node in fused.nodes.values()] == ["inc+inc", "double+add+label", "both"]
    kept = keeps_an_intermediate.to_graph().fuse_sequential()
    assert [node.label for node in kept.nodes.values()] == ["inc+inc", "double"], "an output is never fused away"
    assert [node.label for node in splits.to_graph().fuse_sequential().nodes.values()] == [
        "inc", "halves", "double", "add"]


def test_fuse_flattens_subgraphs_first_and_gives_fewer_nodes():
    g = nested.to_graph()
    fused = g.fuse_sequential()
    assert len(fused.nodes) < len(g.explode_subgraphs().nodes)
    assert run(fused, 3, 4) == nested(3, 4)


# ---------------------------------------------------------------------------
# DOT

_ID = r'"(?:[^"\\]|\\.)*"'
_ATTRIBUTES = rf"\[(?:\w+=(?:{_ID}|\w+))(?:, \w+=(?:{_ID}|\w+))*\]"
_NODE = re.compile(rf"  ({_ID}) ({_ATTRIBUTES});")
_EDGE = re.compile(rf"  ({_ID}) -> ({_ID})(?: ({_ATTRIBUTES}))?;")


def parse_dot(text: str) -> tuple[str, dict[str, str], list[tuple[str, str, str]]]:
    """A strict reader of the DOT subset ``to_dot`` writes: (graph name, node id -> attributes, edges)."""
    lines = text.splitlines()
    header = re.fullmatch(rf"digraph ({_ID}) {{", lines[0])
    assert header and lines[-1] == "}" and text.endswith("}\n"), text
    assert lines[1:3] == ["  rankdir=LR;", "  node [fontname=Helvetica];"]
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    for line in lines[3:-1]:
        if match := _NODE.fullmatch(line):
            assert match[1] not in nodes, f"node {match[1]} declared twice"
            nodes[match[1]] = match[2]
        elif match := _EDGE.fullmatch(line):
            edges.append((match[1], match[2], match[3] or ""))
        else:
            raise AssertionError(f"not a DOT statement: {line!r}")
    for tail, head, _ in edges:
        assert tail in nodes and head in nodes, f"edge {tail} -> {head} between undeclared nodes"
    return header[1], nodes, edges


def test_to_dot_is_a_digraph_with_each_kind_of_node_styled_apart():
    g = splits.to_graph()
    name, nodes, edges = parse_dot(g.to_dot())
    assert name == '"splits"'
    shapes = collections.Counter(re.search(r"shape=(\w+)", attributes)[1] for attributes in nodes.values())
    expected = {"ellipse": len(g.inputs), "note": len(g.consts), "box": len(g.nodes), "doubleoctagon": len(g.outputs)}
    assert shapes == {shape: count for shape, count in expected.items() if count}
    assert len(edges) == sum(len(node.args) + len(node.kwargs) for node in g.nodes.values()) + len(g.outputs)
    assert sum("style=dashed" in attributes for attributes in nodes.values()) == sum(
        node.implicit for node in g.nodes.values())
    assert nodes['"node:halves-2"'] == '[label="halves", shape=box]'


def test_to_dot_draws_subgraphs_as_3d_boxes_and_quotes_odd_names():
    @graph
    def odd(x):
        return note(x, 'a "quoted" \\ label')

    _, nodes, _ = parse_dot(nested.to_graph().to_dot())
    assert sum("shape=box3d" in attributes for attributes in nodes.values()) == 3
    _, nodes, _ = parse_dot(odd.to_graph().to_dot())
    assert any("quoted" in attributes for attributes in nodes.values())


def test_to_dot_parses_with_pydot_when_it_is_installed():
    pydot = pytest.importorskip("pydot")
    import networkx.drawing.nx_pydot as nx_pydot

    g = nested.to_graph()
    [parsed] = pydot.graph_from_dot_data(g.to_dot())
    drawn = nx_pydot.from_pydot(parsed)
    assert drawn.number_of_nodes() == len(g.inputs) + len(g.consts) + len(g.nodes) + len(g.outputs)


def test_to_dot_keeps_non_ascii_labels_as_they_are():
    text = splits.to_graph().to_dot()
    assert "\\u" not in text and "←" in text


# ---------------------------------------------------------------------------
# Pickling decorated functions, and graphs


def test_module_level_decorated_functions_pickle_by_reference():
    for function in (inc, label, chain, nested, halves):
        data = pickle.dumps(function)
        assert len(data) < 200, "by reference: a module and a name"
        assert pickle.loads(data) is function


def test_local_decorated_functions_pickle_by_value_with_cloudpickle():
    copy = cloudpickle.loads(cloudpickle.dumps(local_program))
    assert copy is not local_program
    assert copy(5) == local_program(5) == 20
    assert run(copy.to_graph(), 5) == 20
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(local_program)


def test_graphs_and_their_dicts_pickle():
    g = nested.to_graph()
    assert pickle.loads(pickle.dumps(g)) == g
    dsk, key = g.fuse_sequential().to_call_dict(3, 4)
    assert GraphEngine().get(pickle.loads(pickle.dumps(dsk)), key) == nested(3, 4)
