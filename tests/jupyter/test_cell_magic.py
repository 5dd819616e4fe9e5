"""``%%scaler`` in a real kernel, against a real cluster on loopback: what a notebook user types and sees."""

from __future__ import annotations

import textwrap

import pytest


@pytest.fixture(scope="module")
def notebook(kernel, cluster):
    """The module's kernel, its ``%%scaler`` cells running on the module's cluster."""
    kernel.run(textwrap.dedent(f"""
        from scaler_jupyter import Client
        from scaler_jupyter.jupyter import cell_magic
        _scaler_client = Client({cluster.address!r})
        cell_magic.use_client(_scaler_client)
    """))
    yield kernel
    kernel.run("cell_magic.use_client(None); _scaler_client.shutdown(cancel_futures=True)")


def cell(*lines: str) -> str:
    return "\n".join(lines)


def test_names_read_travel_and_names_bound_come_back(notebook):
    notebook.run("a = 20; b = 'unused'")
    out = notebook.run(cell("%%scaler", "import os", "c = a + 1", "pid = os.getpid()"))
    assert out.error is None
    check = notebook.run("print(c, pid != os.getpid() if 'os' in dir() else pid)")
    assert check.stdout.split()[0] == "21"
    assert notebook.run("print(pid == __import__('os').getpid())").stdout.strip() == "False"
    assert notebook.run("print(type(os).__name__)").stdout.strip() == "module"


def test_notebook_functions_and_classes_go_by_value(notebook):
    notebook.run(cell(
        "class Point:",
        "    def __init__(self, x): self.x = x",
        "    def __repr__(self): return f'Point({self.x})'",
        "def double(p): return Point(p.x * 2)",
    ))
    out = notebook.run(cell("%%scaler", "q = double(Point(21))", "q"))
    assert out.result["text/plain"] == "Point(42)"
    assert notebook.run("print(type(q).__name__, q.x)").stdout.strip() == "Point 42"


def test_last_expression_displays_with_its_rich_repr(notebook):
    notebook.run(cell(
        "class Rich:",
        "    def _repr_html_(self): return '<b>rich</b>'",
    ))
    out = notebook.run(cell("%%scaler", "Rich()"))
    assert out.result["text/html"] == "<b>rich</b>"
    quiet = notebook.run(cell("%%scaler", "r = Rich()", "r;"))
    assert quiet.result is None


def test_large_numpy_array_round_trip(notebook):
    notebook.run("import numpy as np; big = np.arange(50 * 2**20 // 8, dtype=np.float64)")
    notebook.run(cell("%%scaler", "total = float(big.sum())", "big2 = big * 2"))
    out = notebook.run("print(total == float(big.sum()), big2.nbytes, big2.flags.writeable, big2[-1] == 2 * big[-1])")
    assert out.stdout.split() == ["True", str(50 * 2**20), "True", "True"]


def test_printed_output_streams_into_the_cell(notebook):
    out = notebook.run(cell("%%scaler", "import sys", "print('to stdout')", "print('to stderr', file=sys.stderr)"))
    assert "to stdout" in out.stdout
    assert "to stderr" in out.stderr


def test_display_calls_are_replayed(notebook):
    notebook.run(cell(
        "class Shown:",
        "    def _repr_markdown_(self): return '**shown**'",
    ))
    out = notebook.run(cell("%%scaler", "print('before')", "display(Shown())", "display('plain', 3)"))
    assert out.stdout.strip() == "before"
    assert [d.get("text/markdown") for d in out.displays][:1] == ["**shown**"]
    assert [d["text/plain"] for d in out.displays][1:] == ["'plain'", "3"]


def test_exception_has_the_remote_traceback_in_cell_lines(notebook):
    out = notebook.run(cell("%%scaler", "x = 1", "def f(y):", "    return y / 0", "f(x)"), allow_error=True)
    assert out.error["ename"] == "ZeroDivisionError"
    text = "\n".join(out.error["traceback"])
    assert 'line 5, in <module>' in text and 'line 4, in f' in text
    assert "return y / 0" in text
    assert "cell_runner" not in text and "cell_magic" not in text


def test_syntax_error_is_reported_before_anything_is_sent(notebook):
    before = notebook.run("print(_scaler_client.status()['clients'][-1]['submitted'])").stdout
    out = notebook.run(cell("%%scaler", "x = 1", "y = = 2"), allow_error=True)
    assert out.error["ename"].endswith("SyntaxError")
    assert "line 3" in "\n".join(out.error["traceback"])
    after = notebook.run("print(_scaler_client.status()['clients'][-1]['submitted'])").stdout
    assert before == after


def test_unpicklable_variable_is_named_before_anything_is_sent(notebook):
    notebook.run("import threading; lock = threading.Lock(); n = 3")
    out = notebook.run(cell("%%scaler", "with lock:", "    m = n"), allow_error=True)
    assert out.error["ename"] == "SerializationError"
    assert "'lock'" in out.error["evalue"]
    assert len(out.error["traceback"]) == 1  # one line, no traceback


def test_outputs_option_brings_back_only_those_names(notebook):
    notebook.run("kept = dropped = None")
    notebook.run(cell("%%scaler -o kept", "kept = 1", "dropped = 2"))
    assert notebook.run("print(kept, dropped)").stdout.strip() == "1 None"


def test_magic_errors_are_one_line(notebook):
    out = notebook.run(cell("%%scaler --timeout soon", "x = 1"), allow_error=True)
    assert out.status == "error"
    assert out.stderr.strip().splitlines() == [
        "UsageError: %%scaler: argument --timeout: not a number of seconds: 'soon' (see %%scaler --help)"]


def test_no_wait_binds_a_future_and_sets_names_when_done(notebook):
    out = notebook.run(cell("%%scaler --no-wait job", "import time", "time.sleep(0.5)", "answer = 42"))
    assert out.error is None
    result = notebook.run("print(type(job).__name__, job.result(timeout=30), answer)")
    assert result.stdout.split() == ["CellFuture", "{'time':", "<module", "'time'", "(built-in)>,", "'answer':",
                                     "42}", "42"]


def test_map_runs_once_per_item_and_returns_lists(notebook):
    notebook.run("offset = 100")
    out = notebook.run(cell("%%scaler --map k=range(5)", "square = k * k + offset", "print('item', k)", "square"))
    assert notebook.run("print(square)").stdout.strip() == "[100, 101, 104, 109, 116]"
    assert out.result["text/plain"] == "[100, 101, 104, 109, 116]"
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines == [text for k in range(5) for text in (f"[k={k}]", f"item {k}")]


def test_map_failure_names_the_item(notebook):
    out = notebook.run(cell("%%scaler --map v=[1, 0, 2]", "r = 1 / v"), allow_error=True)
    assert out.error["ename"] == "ZeroDivisionError"
    assert "v=0 (item 1 of 3)" in "\n".join(out.error["traceback"])


def test_interrupt_cancels_the_remote_task(notebook):
    msg_id = notebook.client.execute(cell("%%scaler", "import time", "print('started', flush=True)",
                                          "time.sleep(60)"))
    # wait for the task to print, then interrupt the kernel as a user's Ctrl-C or stop button does
    import queue
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            message = notebook.client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream":
            break
    notebook.interrupt()
    out = notebook.collect(msg_id, time.monotonic(), 30)
    assert out.error["ename"] == "KeyboardInterrupt"
    status = notebook.run("import time as _t; _t.sleep(0); print(_scaler_client.status()['tasks']['held'])")
    assert status.stdout.strip() == "0"


def test_tasks_remember_their_cell(notebook):
    out = notebook.run(cell("%%scaler --no-wait slow", "import time", "time.sleep(3)"))
    assert out.error is None
    origins = notebook.run("print(_scaler_client.status()['clients'])").stdout
    assert "time.sleep(3)" not in origins  # the first line of the body is the label
    assert "In [" in origins and ": import time" in origins
    notebook.run("slow.cancel()")
