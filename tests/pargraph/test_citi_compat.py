"""Citi's pargraph 0.9.6 names and behaviours on ours: its module paths, ``to_dict``'s keys, ``@delayed``'s checks."""

from __future__ import annotations

from typing import Annotated

import pytest

from scaler_jupyter.pargraph import GraphEngine, Result, delayed, graph


@delayed
def add(x, y):
    return x + y


@graph
def one_output(x, y):
    return add(x, y)


@graph
def two_outputs(x, y) -> tuple[int, int]:
    return add(x, y), add(y, y)


def test_citis_module_paths_import_our_objects():
    from scaler_jupyter.pargraph.engine.engine import Backend
    from scaler_jupyter.pargraph.engine.engine import GraphEngine as CitiEngine
    from scaler_jupyter.pargraph.graph.annotation import Result
    from scaler_jupyter.pargraph.graph.decorators import delayed as citi_delayed
    from scaler_jupyter.pargraph.graph.objects import FunctionCall, Graph

    import scaler_jupyter.pargraph as pg

    assert (CitiEngine, Result, citi_delayed, Graph) == (pg.GraphEngine, pg.Result, pg.delayed, pg.Graph)
    assert all(isinstance(node, FunctionCall) for node in one_output.to_graph().nodes.values())
    with pytest.raises(TypeError):
        Backend()  # abstract: anything with submit() is one


def test_to_dict_gives_a_list_of_keys_and_to_call_dict_the_calls_shape():
    dsk, keys = one_output.to_graph().to_dict(x=1, y=2)
    assert isinstance(keys, list) and len(keys) == 1
    assert GraphEngine().get(dsk, keys)[0] == 3
    dsk, keys = two_outputs.to_graph().to_dict(1, 2)
    assert GraphEngine().get(dsk, keys) == [3, 4]  # the shape of the keys, as Citi's engine
    assert GraphEngine().get(*one_output.to_graph().to_call_dict(1, 2)) == 3
    assert GraphEngine().get(*two_outputs.to_graph().to_call_dict(1, 2)) == (3, 4)


def test_to_dict_runs_on_dask_as_with_citis():
    dask = pytest.importorskip("dask")
    assert dask.get(*one_output.to_graph().to_dict(x=1, y=2))[0] == 3


def test_delayed_refuses_kwargs_and_args_beside_named_parameters():
    with pytest.raises(ValueError, match="kwargs"):
        delayed(lambda **kwargs: None)
    with pytest.raises(ValueError, match=r"\*args"):
        delayed(lambda a, *args: None)
    assert delayed(lambda *args: sum(args))(1, 2) == 3


def test_operator_nodes_carry_citis_implicit_marker():
    @graph
    def plus_then_add(x, y):
        return add(x + y, y)

    nodes = list(plus_then_add.to_graph().nodes.values())
    implicit = [node for node in nodes if node.implicit]
    assert [node.label for node in implicit] == ["add"]
    assert getattr(implicit[0].function, "__implicit", False) is True
    assert not getattr(next(node for node in nodes if not node.implicit).function, "__implicit", False)
    assert GraphEngine().get(*plus_then_add.to_graph().to_dict(1, 2))[0] == 5


def test_citis_output_names_reader_gives_a_name_or_a_tuple_and_refuses_duplicates():
    """Annotations are read as the module sees them (its globals), as with Citi's: hence the imports at the top."""
    from scaler_jupyter.pargraph.graph.annotation import _get_output_names

    def one() -> int: ...

    def named() -> Annotated[int, Result("total")]: ...

    def two() -> tuple[Annotated[int, Result("low")], int]: ...

    def same_twice() -> tuple[Annotated[int, Result("x")], Annotated[int, Result("x")]]: ...

    def two_names() -> Annotated[int, Result("a"), Result("b")]: ...

    assert (_get_output_names(one), _get_output_names(named), _get_output_names(two)) == (
        "result", "total", ("low", "result_1"))
    for invalid in (same_twice, two_names):
        with pytest.raises(ValueError):
            _get_output_names(invalid)
