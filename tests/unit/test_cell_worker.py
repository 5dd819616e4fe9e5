"""The worker's side of ``%%scaler``, called directly: a cell's code, its values in, its names out."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from scaler_jupyter.jupyter.cell_worker import TRACEBACK_ATTRIBUTE, Cell, pack, rebind_globals, run_cell, unpack


def sent(packed):
    """What the other side receives: its own copy of every buffer, as a received frame is."""
    stream, buffers = packed
    return stream, tuple(bytearray(buffer) for buffer in buffers)


def run(source: str, values: dict, returns=(), last_expression=False, extra=None) -> dict:
    cell = Cell("\n" + source, "Cell In[7]", tuple(returns), last_expression)
    return unpack(run_cell(cell, sent(pack(values)), None if extra is None else sent(pack(extra))))


def test_names_in_and_out_and_the_last_value():
    outcome = run("import math\ny = x * 2\nmath.floor(y / 3)", {"x": 10}, returns=("math", "y", "missing"),
                  last_expression=True)
    assert outcome["value"] == 6
    assert outcome["names"]["y"] == 20 and outcome["names"]["math"].__name__ == "math"
    assert "missing" not in outcome["names"]


def test_arrays_travel_out_of_band_and_arrive_writable():
    array = np.arange(1_000_000, dtype=np.float64)
    stream, buffers = pack({"a": array})
    assert len(stream) < 1000 and sum(memoryview(b).nbytes for b in buffers) == array.nbytes
    outcome = run("a += 1\nb = a", {"a": array}, returns=("b",))
    assert outcome["names"]["b"][0] == 1.0 and outcome["names"]["b"].flags.writeable
    assert array[0] == 0.0  # the caller's array is untouched


def test_an_exception_carries_its_traceback_in_the_cell_s_lines():
    with pytest.raises(ZeroDivisionError) as caught:
        run("x = 1\ndef f():\n    return 1 / 0\nf()", {})
    text = getattr(caught.value, TRACEBACK_ATTRIBUTE)
    assert 'File "Cell In[7]", line 5, in <module>' in text and 'File "Cell In[7]", line 4, in f' in text
    assert "return 1 / 0" in text and "cell_worker" not in text


def test_a_value_that_cannot_be_pickled_stays_behind_with_a_warning(capsys):
    outcome = run("import threading\nlock = threading.Lock()\nn = 1\nlock", {}, returns=("lock", "n"),
                  last_expression=True)
    assert outcome == {"names": {"n": 1}, "value": None}
    err = capsys.readouterr().err
    assert "'lock' stays on the worker" in err and "the value of the last expression stays on the worker" in err


def test_an_unpicklable_input_fails_when_packed():
    with pytest.raises(TypeError):
        pack({"lock": threading.Lock()})


def test_a_map_item_is_bound_beside_the_shared_values():
    assert run("r = base + k", {"base": 100}, returns=("r",), extra={"k": 5})["names"] == {"r": 105}


def test_rebound_functions_look_names_up_in_the_given_namespace():
    def uses_factor(x):
        return x * factor  # noqa: F821 - a global of the namespace it is rebound to

    uses_factor.__module__ = "__main__"  # as a notebook's function
    namespace = {"factor": 7, "f": uses_factor}
    rebind_globals(namespace, namespace)
    assert namespace["f"](2) == 14 and namespace["f"].__qualname__ == uses_factor.__qualname__


def test_a_cell_run_again_is_named_after_its_new_execution_count():
    for count in (3, 4):
        cell = Cell("\ndef f():\n    return 1 / 0\nf()", f"Cell In[{count}]", (), False)
        with pytest.raises(ZeroDivisionError) as caught:
            run_cell(cell, pack({}))
        text = getattr(caught.value, TRACEBACK_ATTRIBUTE)
        assert f'File "Cell In[{count}]", line 4, in <module>' in text
        assert f'File "Cell In[{count}]", line 3, in f' in text and "return 1 / 0" in text
