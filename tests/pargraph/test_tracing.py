"""Tracing plain Python into graphs: the talk's report example, operators, control flow, subgraphs, outputs.

Every program run by ``CASES`` is a module-level function of tracing_programs.py (so
a process pool finds it by reference, and tests/integration/test_pargraph_backends.py
runs it too) with the arguments of one call; the parametrized test at the end proves
that each one, traced and run, gives what the plain call gives. The tests check the
shape of the graphs, and the errors.
"""

from __future__ import annotations

from typing import Annotated

import pytest

from scaler_jupyter.pargraph import Graph, GraphEngine, Result, delayed, graph
from scaler_jupyter.pargraph.dask_dict import base_key
from scaler_jupyter.pargraph.model import MISSING, Ref
from tests.pargraph.cases import check_cases
from tests.pargraph.engine_programs import add, inc
from tests.pargraph.tracing_programs import (
    CASES,
    arithmetic,
    comparisons,
    items_and_attributes,
    join,
    keyword_calls,
    middle,
    named,
    numeric,
    outer,
    reflected,
    report,
    report_files,
    scaled,
    stepped,
    text,
    two_results,
    unpacks,
    uses_pass_through,
)

# ---------------------------------------------------------------------------
# The talk's example: read a file and preprocess it, read a table and extract the emails, send the report.
# (The programs of every section are in tracing_programs.py, with their CASES.)


def ancestors(g: Graph, ref: Ref) -> set[str]:
    """The nodes ``ref`` depends on, itself included."""
    found: set[str] = set()
    stack = [ref]
    while stack:
        ref = stack.pop()
        if ref.kind == "node" and ref.name not in found:
            found.add(ref.name)
            stack.extend(g.nodes[ref.name].refs())
    return found


def test_the_report_runs_as_plain_python(tmp_path):
    sent = report(**report_files(tmp_path))
    assert sorted(sent) == ["ada@example.com", "bob@example.com"]
    assert sent["ada@example.com"] == "To: ada@example.com\nSubject: weekly report\n\nsales up 3%\ncosts flat"


def test_the_report_traces_into_two_independent_branches_without_running_anything(tmp_path):
    g = report.to_graph()  # the paths do not exist: tracing reads nothing
    assert [node.label for node in g.nodes.values()] == [
        "read_file", "preprocess", "read_table", "extract_emails", "send_report"]
    assert list(g.inputs) == ["path", "table"] and list(g.outputs) == ["sent"]
    by_label = {node.label: node for node in g.nodes.values()}
    text_branch = ancestors(g, Ref("node", by_label["preprocess"].key))
    email_branch = ancestors(g, Ref("node", by_label["extract_emails"].key))
    assert len(text_branch) == 2 and len(email_branch) == 2 and not text_branch & email_branch
    assert ancestors(g, g.outputs["sent"]) == text_branch | email_branch | {by_label["send_report"].key}
    assert not list(tmp_path.iterdir())


def test_the_report_s_dict_has_two_chains_that_meet_only_at_the_end(tmp_path):
    from scaler_jupyter.client.graph import plan

    dsk, key = report.to_graph().to_call_dict(**report_files(tmp_path))
    assert base_key(key) == "sent"
    nodes = {base_key(node.key): [base_key(d) for d in node.dependencies] for node in plan(dsk, key).nodes}
    assert sorted(nodes["sent"]) == sorted(["preprocess-2", "extract_emails-4"])
    assert nodes["preprocess-2"] == ["read_file-1"]
    assert nodes["extract_emails-4"] == ["read_table-3"]
    assert nodes["read_file-1"] == ["input-path"] and nodes["read_table-3"] == ["input-table"]


def test_binding_the_path_leaves_the_table_as_the_only_input(tmp_path):
    files = report_files(tmp_path)
    g = report.to_graph(path=files["path"])
    assert list(g.inputs) == ["table"]
    assert list(g.consts.values()) == [files["path"]]
    assert GraphEngine().get(*g.to_call_dict(files["table"])) == report(**files)


# ---------------------------------------------------------------------------
# Operators on traced values become nodes




def labels(g: Graph) -> list[str]:
    return [node.label for node in g.nodes.values()]


def test_arithmetic_makes_one_implicit_node_per_operator():
    g = arithmetic.to_graph()
    assert labels(g) == ["add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and", "or",
                         "xor", "neg", "pos", "invert", "neg", "abs", "add", "tuple"]
    assert all(node.implicit for node in g.nodes.values())
    assert not g.consts.keys() - {n for node in g.nodes.values() for n in (r.name for r in node.refs())}


def test_a_reflected_operator_keeps_the_constant_on_the_left():
    g = reflected.to_graph()
    sub = next(node for node in g.nodes.values() if node.label == "sub")
    assert [ref.kind for ref in sub.args] == ["const", "input"] and g.consts[sub.args[0].name] == 10


def test_comparisons_are_nodes_not_booleans():
    g = comparisons.to_graph()
    assert labels(g) == ["lt", "le", "eq", "ne", "gt", "ge", "gt", "eq", "tuple"]


def test_round_abs_divmod_and_math_functions_are_nodes():
    assert labels(numeric.to_graph()) == ["round", "round", "abs", "divmod", "divmod", "floor", "ceil", "trunc",
                                          "pow", "tuple"]


def test_attribute_reads_and_method_calls_are_nodes_named_after_them():
    g = items_and_attributes.to_graph()
    assert {"getitem", "upper", "get", "real", "imag", "conjugate", "split", "strip", "Point"} <= set(labels(g))


def test_formatting_a_traced_value_becomes_format_and_concat_nodes():
    g = text.to_graph()
    assert {"format", "concat"} <= set(labels(g))
    assert "\ue000" not in repr(g.consts), "no marker text is left in a constant"


def test_keyword_arguments_keep_their_names():
    g = keyword_calls.to_graph()
    first = next(node for node in g.nodes.values() if node.label == "join")
    assert [name for name, _ in first.kwargs] == ["b", "a"]


def test_a_traced_value_cannot_be_changed_in_place():
    @graph
    def assign(x):
        x.field = 1

    @graph
    def store(x):
        x["k"] = 1

    for program in (assign, store):
        with pytest.raises(TypeError, match="cannot be changed in place"):
            program.to_graph()


# ---------------------------------------------------------------------------
# What Python must know at once is a TypeError that says why

EXPLANATION = "Control flow and sizes must depend on concrete arguments"


@graph
def uses_if(x):
    if x > 0:
        return x
    return -x


@graph
def uses_and(x, y):
    return x and y


@graph
def uses_or(x, y):
    return x or y


@graph
def uses_not(x):
    return not x


@graph
def uses_bool(x):
    return bool(x)


@graph
def uses_len(x):
    return len(x)


@graph
def uses_int(x):
    return int(x)


@graph
def uses_float(x):
    return float(x)


@graph
def uses_iteration(x):
    return [item + 1 for item in x]


@graph
def uses_unpacking(x):
    first, _second = x
    return first


@graph
def uses_in(x):
    return 3 in x


@graph
def uses_range(x):
    return range(x)


@pytest.mark.parametrize(("program", "what"), [
    (uses_if, "bool()"), (uses_and, "bool()"), (uses_or, "bool()"), (uses_not, "bool()"), (uses_bool, "bool()"),
    (uses_len, "len()"), (uses_int, "int()"), (uses_float, "float()"), (uses_iteration, "iterating"),
    (uses_unpacking, "iterating"), (uses_in, "`in`"), (uses_range, "as an index or size"),
], ids=lambda value: getattr(value, "__name__", None))
def test_control_flow_on_a_traced_value_is_a_type_error_that_explains(program, what):
    with pytest.raises(TypeError) as raised:
        program.to_graph()
    message = str(raised.value)
    assert message.startswith(what) or what in message.split(".")[0], message
    assert EXPLANATION in message and "to_graph(name=value)" in message, message


def test_the_same_control_flow_on_a_bound_argument_just_runs():
    g = uses_if.to_graph(x=-4)
    assert g.inputs == {} and GraphEngine().get(*g.to_call_dict()) == uses_if(-4) == 4
    assert GraphEngine().get(*uses_len.to_graph([1, 2]).to_call_dict()) == 2


# ---------------------------------------------------------------------------
# Text of traced values: what needs the real text is refused


@graph
def shout(name):
    return f"hello {name}".upper()


@graph
def width(n):
    return len(str(n))


@graph
def text_equals(n):
    return str(n) == "5"


def test_changing_the_text_of_a_traced_value_is_recorded_or_refused():
    try:
        g = shout.to_graph()
    except TypeError:
        return
    assert GraphEngine().get(*g.to_call_dict("bob")) == shout("bob") == "HELLO BOB"


def test_len_of_the_text_of_a_traced_value_is_refused():
    with pytest.raises(TypeError):
        width.to_graph()


def test_comparing_the_text_of_a_traced_value_is_a_node_or_refused():
    try:
        g = text_equals.to_graph()
    except TypeError:
        return
    assert GraphEngine().get(*g.to_call_dict(5)) is text_equals(5) is True


@graph
def padded_repr(name):
    return f"[{name!r:>12}]"


def test_a_conversion_with_a_format_spec_pads_the_value():
    assert GraphEngine().get(*padded_repr.to_graph().to_call_dict("bob")) == padded_repr("bob") == "[       'bob']"


def test_cutting_the_text_of_a_traced_value_is_refused():
    @graph
    def cut(n):
        return str(n)[:2]

    with pytest.raises(TypeError, match="text of a traced value"):
        cut.to_graph()


# ---------------------------------------------------------------------------
# Subgraphs: a @graph called in a @graph, nested twice




def test_a_graph_called_in_a_graph_is_one_subgraph_node():
    g = outer.to_graph()
    assert labels(g) == ["inner", "middle", "inner", "tuple"]
    assert all(node.subgraph is not None and not node.implicit for node in list(g.nodes.values())[:3])
    middle_graph = g.nodes["middle-2"].subgraph
    assert labels(middle_graph) == ["inner", "inner", "mul", "inner", "tuple"]
    assert labels(middle_graph.nodes["inner-1"].subgraph) == ["inc", "add"]


def test_a_subgraph_s_defaults_are_its_constants():
    g = middle.to_graph()
    called_with_one = g.nodes["inner-2"].subgraph
    assert list(called_with_one.inputs) == ["a"] and 10 in called_with_one.consts.values()


def test_subgraphs_nested_twice_explode_into_their_calls():
    flat = outer.to_graph().explode_subgraphs()
    assert all(node.subgraph is None for node in flat.nodes.values())
    assert sorted(set(labels(flat))) == ["add", "inc", "mul", "tuple"]
    assert "middle-2/inner-1/inc-1" in flat.nodes
    assert GraphEngine().get(*flat.to_call_dict(3, 4)) == outer(3, 4)


def test_passing_a_subgraph_s_input_through_to_its_output():
    g = uses_pass_through.to_graph()
    assert labels(g) == ["inc", "passes_through", "add"]
    assert uses_pass_through(5) == 12


@graph
def total_of(values):
    return add(values[0], values[1])


@graph
def passes_a_list_to_a_subgraph(x):
    return total_of([x, inc(x)])


def test_a_list_of_traced_values_can_be_passed_to_a_subgraph():
    assert GraphEngine().get(*passes_a_list_to_a_subgraph.to_graph().to_call_dict(4)) == passes_a_list_to_a_subgraph(4)


@graph
def shows(label):
    return join(label, "shown")


@graph
def passes_an_f_string_to_a_subgraph(x):
    return shows(f"<{x}>")


def test_an_f_string_of_a_traced_value_can_be_passed_to_a_subgraph():
    g = passes_an_f_string_to_a_subgraph.to_graph()
    assert GraphEngine().get(*g.to_call_dict(4)) == passes_an_f_string_to_a_subgraph(4) == "<4>|shown"


def test_a_traced_value_of_another_graph_is_refused():
    leaked = []

    @graph
    def first(x):
        leaked.append(x)
        return x

    @graph
    def second(y):
        return add(leaked[0], y)

    first.to_graph()
    with pytest.raises(TypeError, match="used while tracing another"):
        second.to_graph()


# ---------------------------------------------------------------------------
# Partial binding and defaults




def test_bound_arguments_are_constants_and_the_others_inputs():
    g = scaled.to_graph(factor=3, mode="sum")
    assert list(g.inputs) == ["values"] and 3 in g.consts.values() and "sum" not in g.consts.values()
    assert GraphEngine().get(*g.to_call_dict([1, 2])) == 9


def test_control_flow_on_a_bound_argument_picks_the_branch_at_trace_time():
    assert labels(scaled.to_graph(mode="sum")) == ["getitem", "getitem", "add", "mul"]
    assert labels(scaled.to_graph(mode="first")) == ["getitem", "mul"]


def test_control_flow_on_an_unbound_argument_is_refused_even_with_a_default():
    with pytest.raises(TypeError, match="bool\\(\\) of a traced value"):
        scaled.to_graph()


def test_defaults_are_the_inputs_defaults():
    g = stepped.to_graph()
    assert {name: spec.default for name, spec in g.inputs.items()} == {"x": MISSING, "step": 1, "times": 2}
    assert repr(g).startswith("<Graph stepped(x, step=1, times=2) -> (result): 2 nodes")
    assert GraphEngine().get(*g.to_call_dict(1)) == 4
    assert GraphEngine().get(*g.to_call_dict(1, times=10)) == 20
    assert GraphEngine().get(*g.to_call_dict(1, 2, 3)) == 9


def test_binding_every_argument_still_gives_a_graph_and_runs_nothing():
    calls = []

    @delayed
    def noted(x):
        calls.append(x)
        return x

    @graph
    def program(x):
        return noted(x)

    g = program.to_graph(5)
    assert isinstance(g, Graph) and g.inputs == {} and calls == []
    assert GraphEngine().get(*g.to_call_dict()) == 5 and calls == [5]


def test_positional_and_keyword_binding_give_the_same_graph():
    assert scaled.to_graph([1, 2], 3, "sum") == scaled.to_graph(values=[1, 2], factor=3, mode="sum")


def test_to_graph_refuses_arguments_the_function_does_not_take():
    with pytest.raises(TypeError, match=r"scaled\.to_graph: "):
        scaled.to_graph(nope=1)


def test_a_delayed_function_traces_alone():
    g = inc.to_graph()
    assert labels(g) == ["inc"] and list(g.inputs) == ["x"]
    assert GraphEngine().get(*g.to_call_dict(41)) == 42


# ---------------------------------------------------------------------------
# Outputs: one, a tuple, named by Result




def test_outputs_are_named_by_result_and_numbered_otherwise():
    g = named.to_graph()
    assert list(g.outputs) == ["doubled", "label", "result_2"] and g.multiple
    dsk, keys = g.to_call_dict(4)
    assert tuple(map(base_key, keys)) == ("doubled", "label", "result_2")
    assert GraphEngine().get(dsk, keys) == (8, "4|-", 5)


def test_one_output_is_called_result_or_its_result_name():
    assert list(inc.to_graph().outputs) == ["result"]
    assert list(report.to_graph().outputs) == ["sent"]
    assert base_key(inc.to_graph().to_call_dict(1)[1]) == "result"


def test_a_delayed_function_with_a_tuple_annotation_unpacks_into_two_values():
    g = unpacks.to_graph()
    assert labels(g) == ["two_results", "sub"]
    sub = g.nodes["sub-2"]
    assert [ref.index for ref in sub.args] == [1, 0]
    assert list(two_results.to_graph().outputs) == ["low", "high"]


def test_duplicate_output_names_are_a_value_error_at_decoration():
    with pytest.raises(ValueError, match="names two outputs 'same'"):
        @delayed
        def twice(x) -> tuple[Annotated[int, Result("same")], Annotated[int, Result("same")]]:
            return x, x

    with pytest.raises(ValueError, match="names two outputs 'same'"):
        @graph
        def twice_in_a_graph(x) -> tuple[Annotated[int, Result("same")], Annotated[int, Result("same")]]:
            return x, x


def test_two_results_on_one_output_and_empty_names_are_value_errors():
    with pytest.raises(ValueError, match="2 Result annotations"):
        @graph
        def doubly_named(x) -> Annotated[int, Result("a"), Result("b")]:
            return x

    with pytest.raises(ValueError, match="non-empty name"):
        Result("")


def test_returning_fewer_values_than_the_annotation_names_is_a_value_error():
    @graph
    def short(x) -> tuple[int, int]:
        return x

    with pytest.raises(ValueError, match=r"annotated with 2 outputs .* but returned one value"):
        short.to_graph()


def test_a_graph_s_parameters_must_be_named():
    with pytest.raises(ValueError, match=r"\*rest cannot be a graph input"):
        @graph
        def variadic(x, *rest):
            return x


# ---------------------------------------------------------------------------
# Inputs at to_dict time


def test_a_missing_input_without_default_is_a_value_error_naming_it():
    g = scaled.to_graph(mode="sum")
    with pytest.raises(ValueError, match="input 'factor' of scaled has no value and no default"):
        g.to_call_dict([1, 2])


def test_unknown_duplicate_and_surplus_inputs_are_type_errors():
    g = scaled.to_graph(mode="sum")
    with pytest.raises(TypeError, match="no input 'nope'"):
        g.to_call_dict([1], 2, nope=3)
    with pytest.raises(TypeError, match="got input 'values' twice"):
        g.to_call_dict([1], values=[2])
    with pytest.raises(TypeError, match="takes 2 inputs"):
        g.to_call_dict(1, 2, 3)


# ---------------------------------------------------------------------------
# Called normally, decorated functions are plain functions


def test_decorated_functions_called_normally_just_run():
    assert inc(1) == 2 and outer(3, 4) == outer.__wrapped__(3, 4)
    assert inc.__name__ == "inc" and inc.__doc__ is None and outer.pargraph_kind == "graph"
    assert inc.pargraph_kind == "delayed"
    assert inc.__wrapped__(1) == 2


# ---------------------------------------------------------------------------
# Every program above, traced and run, gives what its plain call gives
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_program_here_runs_as_its_plain_call(case, tmp_path):
    check_cases(case, tmp_path)


def test_changing_the_case_of_an_f_string_of_a_traced_value_is_refused():
    with pytest.raises(TypeError, match="changed after an f-string"):
        shout.to_graph()


def test_text_of_traced_values_can_be_concatenated_and_joined():
    @graph
    def joined(a, b):
        return "-".join([str(a), f"<{b}>"]) + "!" + str(b)

    assert GraphEngine().get(*joined.to_graph().to_call_dict(1, 2)) == joined(1, 2) == "1-<2>!2"
