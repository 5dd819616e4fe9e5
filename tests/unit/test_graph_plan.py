"""The client's side of graphs, without a cluster: culling, checks, order, and how a task evaluates."""

from __future__ import annotations

import operator

import pytest

from scaler_jupyter.client.graph import plan, repack, run_tuple_task
from scaler_jupyter.errors import GraphError


def inc(x):
    return x + 1


def by_key(p):
    return {node.key: node for node in p.nodes}


def test_culls_to_what_the_keys_need():
    dsk = {"a": 1, "b": (inc, "a"), "c": (inc, "b"), "unused": (inc, "c"), "other": (inc, 5)}
    p = plan(dsk, "c")
    assert [node.key for node in p.nodes] == ["a", "b", "c"]
    assert p.outputs == ["c"]


def test_dependencies_are_found_in_nested_tasks_lists_tuples_and_dicts():
    dsk = {"a": 1, "b": 2, ("x", 0): 3, "d": 4,
           "t": (sum, [(inc, "a"), "b", (operator.add, ("x", 0), 1)]), "u": (dict, {"k": "d"})}
    nodes = by_key(plan(dsk, ["t", "u"]))
    assert sorted(map(str, nodes["t"].dependencies)) == sorted(map(str, ["a", "b", ("x", 0)]))
    assert nodes["u"].dependencies == ["d"]


def test_literals_are_not_tasks_and_aliases_are():
    nodes = by_key(plan({"a": [1, 2], "b": "a", "s": "not a key"}, ["b", "s"]))
    assert nodes["a"].literal and nodes["s"].literal
    assert not nodes["b"].literal and nodes["b"].dependencies == ["a"]


def test_order_puts_dependencies_first_and_levels_count_the_longest_chain():
    dsk = {"a": (inc, 1), "b": (inc, "a"), "c": (inc, "b"), "d": (operator.add, "a", "c")}
    p = plan(dsk, "d")
    seen = set()
    for node in p.nodes:
        assert set(node.dependencies) <= seen
        seen.add(node.key)
    assert {node.key: node.level for node in p.nodes} == {"a": 1, "b": 2, "c": 3, "d": 4}


def test_a_missing_key_names_it_and_what_needs_it():
    with pytest.raises(GraphError, match="'nope' is not in the graph"):
        plan({"a": 1}, ["a", "nope"])


def test_a_cycle_is_reported_with_its_keys():
    with pytest.raises(GraphError, match="cycle") as info:
        plan({"a": (inc, "b"), "b": (inc, "c"), "c": (inc, "a"), "d": (inc, "a")}, "d")
    assert all(key in str(info.value) for key in ("'a'", "'b'", "'c'"))


def test_unhashable_keys_are_refused():
    with pytest.raises(GraphError, match="not a key"):
        plan({"a": 1}, [{"a"}])


def test_repack_keeps_the_shape_of_keys_as_dask_get_returns_it():
    values = {"a": 1, ("x", 0): 2}
    assert repack([["a"], [("x", 0), "a"]], values) == ((1,), (2, 1))
    assert repack(("x", 0), values) == 2
    assert repack([], values) == ()


def test_run_tuple_task_evaluates_like_dask():
    values = {"a": 10, ("x", 0): 5}
    assert run_tuple_task((operator.add, (inc, "a"), ("x", 0)), values) == 16
    assert run_tuple_task([("x", 0), "a", "free text"], values) == [5, 10, "free text"]
    assert run_tuple_task((dict, {"k": "a"}), values) == {"k": 10}
    assert run_tuple_task((sorted, {"a", 3}), values) == [3, 10]
    assert run_tuple_task("a", values) == 10  # an alias


def test_plan_accepts_dask_collections_and_task_spec_graphs():
    dask = pytest.importorskip("dask")
    from dask._task_spec import Task, TaskRef

    dsk = {"a": 1, "b": Task("b", inc, TaskRef("a")), "c": (inc, "b")}
    p = plan(dsk, "c")
    nodes = by_key(p)
    assert nodes["a"].literal and nodes["a"].expression == 1
    assert nodes["b"].dependencies == ["a"] and nodes["c"].dependencies == ["b"]
    assert nodes["c"].runner(nodes["c"].expression, {"b": 4}) == 5

    total = dask.delayed(sum)([dask.delayed(inc)(i) for i in range(3)])
    assert len(plan(total, total.key).nodes) == 4


def test_a_container_of_tasks_is_a_task_even_with_no_key_inside():
    nodes = by_key(plan({"l": [(inc, 1), (inc, 2)], "t": ((inc, 10), 5), "s": {(inc, 1)}}, ["l", "t", "s"]))
    assert not any(node.literal for node in nodes.values())
    assert run_tuple_task(nodes["l"].expression, {}) == [2, 3]
    assert run_tuple_task(nodes["t"].expression, {}) == (11, 5)


def test_a_dict_is_read_only_as_a_task_s_direct_argument():
    dsk = {"x": 1, "d": {"a": "x"}, "e": (dict, {"a": "x"}), "f": (list, [{"a": "x"}])}
    nodes = by_key(plan(dsk, ["d", "e", "f"]))
    assert nodes["d"].literal
    assert nodes["e"].dependencies == ["x"]
    assert nodes["f"].dependencies == []  # inside a list, a dict is data
