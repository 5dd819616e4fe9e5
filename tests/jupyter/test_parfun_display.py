"""parfun in a real kernel: the live line of a call, its summary, the profile as a table with the cost curve."""

from __future__ import annotations

import pytest

SETUP = """
import scaler_jupyter.parfun as pf

@pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=sum, fixed_partition_size=10)
def total(values):
    return sum(values)

@pf.parallel(split=pf.per_argument(values=pf.py_list.by_chunk), combine_with=sum, profile=True)
def profiled(values):
    return sum(values)

pf.set_parallel_backend("local_single_process")
"""


@pytest.fixture(scope="module")
def parfun_kernel(kernel):
    kernel.run(SETUP)
    yield kernel
    kernel.run("pf.notebook_display('auto'); pf.set_parallel_backend('none')")


def lines(out) -> list[str]:
    return [bundle["text/plain"] for bundle in out.displays if "text/plain" in bundle]


def test_always_shows_a_live_line_that_becomes_the_summary(parfun_kernel):
    out = parfun_kernel.run("pf.notebook_display('always')\ntotal(list(range(1000)))")
    assert out.result["text/plain"] == str(sum(range(1000)))
    shown = lines(out)
    assert shown, out.displays
    summary = shown[-1]
    assert summary.startswith("total(): 100 partitions, 1,000 items in ")
    assert "size fixed at 10" in summary
    assert shown[0].startswith("total(): 1/~100 partitions, 10 of 1,000 items, size 10, fixed")  # from the first


def test_never_shows_nothing(parfun_kernel):
    out = parfun_kernel.run("pf.notebook_display('never')\ntotal(list(range(1000)))")
    assert out.displays == [] and out.stdout == "" and out.stderr == ""


def test_auto_shows_nothing_for_a_quick_call(parfun_kernel):
    out = parfun_kernel.run("pf.notebook_display('auto')\ntotal(list(range(100)))")
    assert out.displays == []


def test_a_bad_mode_is_refused(parfun_kernel):
    out = parfun_kernel.run("pf.notebook_display('sometimes')", allow_error=True)
    assert out.error["ename"] == "ValueError" and "'auto'" in out.error["evalue"]


def test_profile_shows_a_table_and_the_cost_curve_instead_of_printing(parfun_kernel):
    out = parfun_kernel.run("pf.notebook_display('auto')\nprofiled(list(range(20000)))")
    assert out.stderr == ""  # the text report is for terminals
    tables = [bundle["text/html"] for bundle in out.displays if "<table" in bundle.get("text/html", "")]
    assert len(tables) == 1 and "compute" in tables[0] and "profiled(): " in tables[0]
    widgets = [bundle for bundle in out.displays if "application/vnd.jupyter.widget-view+json" in bundle]
    assert widgets, "the cost-curve panel"
    assert lines(out)[-1].startswith("profiled(): ")  # the summary line, shown at once for a profiled call
    again = parfun_kernel.run("profiled(list(range(20000)))")
    model_ids = {bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
                 for o in (out, again) for bundle in o.displays if "application/vnd.jupyter.widget-view+json" in bundle}
    assert len(model_ids) == 1  # one live panel per function, shown again
