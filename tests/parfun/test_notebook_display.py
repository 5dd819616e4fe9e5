"""Outside a notebook, parfun's notebook display shows nothing, whatever the mode."""

from __future__ import annotations

import scaler_jupyter.parfun as pf
from scaler_jupyter.parfun import notebook


@pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=sum, fixed_partition_size=10)
def total(values: list[int]) -> int:
    return sum(values)


def test_outside_a_kernel_nothing_is_shown_even_when_always(capsys):
    assert not notebook.in_notebook()
    pf.notebook_display("always")
    try:
        with pf.set_parallel_backend_context("local_single_process"):
            assert total(list(range(100))) == sum(range(100))
    finally:
        pf.notebook_display("auto")
    assert capsys.readouterr() == ("", "")


def test_the_summary_line_says_what_the_call_settled_on():
    with pf.set_parallel_backend_context("local_single_process"):
        total(list(range(100)))
    line = notebook.summary_line(total.last_trace())
    assert line.startswith("total(): 10 partitions, 100 items in ") and line.endswith("size fixed at 10")
