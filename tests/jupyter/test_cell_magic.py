"""``%%scaler`` in a real kernel, against a real cluster on loopback: what a notebook user types and sees."""

from __future__ import annotations

import queue
import time

import pytest

from scaler_jupyter import Client
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def notebook(kernel, cluster):
    """The module's kernel, its ``%%scaler`` cells running on the module's cluster."""
    kernel.run(f"%scaler connect {cluster.address}\n"
               "import scaler_jupyter\n_scaler_client = scaler_jupyter.current_client()")
    yield kernel
    kernel.run("%scaler stop")


@pytest.fixture(scope="module")
def observer(cluster):
    """A client of the test's own, to watch the cluster from outside the kernel."""
    with Client(cluster.address, timeout=30) as client:
        yield client


def cell(*lines: str) -> str:
    return "\n".join(lines)


def value_of(notebook, expression: str) -> str:
    return notebook.run(f"print(repr({expression}))").stdout.strip()


def wait_for_stream(notebook, msg_id: str, text: str, timeout: float = 30.0) -> None:
    """Wait until the cell ``msg_id`` has printed ``text`` (while it still runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = notebook.client.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if (message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "stream"
                and text in message["content"]["text"]):
            return
    raise AssertionError(f"the cell did not print {text!r} within {timeout:g}s")


def cell_lines_waiting_for(path) -> list[str]:
    """Cell lines that wait (30 s at most) for ``path`` to exist: the test decides when the task goes on."""
    return ["import os, time", "deadline = time.monotonic() + 30",
            f"while not os.path.exists({str(path)!r}) and time.monotonic() < deadline:", "    time.sleep(0.01)"]


def held_tasks(client: Client) -> int:
    return client.status()["tasks"]["held"]


# -- names in, names out ------------------------------------------------------------


def test_names_read_travel_and_names_bound_come_back(notebook):
    notebook.run("a = 20; b = 'not read'")
    notebook.run(cell("%%scaler", "import os", "c = a + 1", "pid = os.getpid()"))
    assert value_of(notebook, "c") == "21"
    assert value_of(notebook, "pid != __import__('os').getpid()") == "True"  # it ran elsewhere
    assert value_of(notebook, "type(os).__name__") == "'module'"  # modules come back by name


def test_notebook_functions_and_classes_go_by_value(notebook):
    notebook.run(cell(
        "class Point:",
        "    def __init__(self, x): self.x = x",
        "    def __repr__(self): return f'Point({self.x})'",
        "def double(p): return Point(p.x * 2)",
    ))
    out = notebook.run(cell("%%scaler", "q = double(Point(21))", "q"))
    assert out.result["text/plain"] == "Point(42)"
    assert value_of(notebook, "(type(q).__name__, q.x)") == "('Point', 42)"


def test_functions_see_the_namespace_they_run_in(notebook):
    notebook.run(cell("factor = 2", "def scaled(x): return x * factor"))
    notebook.run(cell("%%scaler", "factor = 10", "r = scaled(1)  # the notebook's function sees the cell's factor",
                      "def tripled(x): return x * factor"))
    assert value_of(notebook, "r") == "10"
    notebook.run("factor = 3")
    assert value_of(notebook, "tripled(1)") == "3"  # the cell's function sees the notebook's factor


def test_outputs_option_brings_back_only_those_names(notebook):
    notebook.run("kept = dropped = None")
    notebook.run(cell("%%scaler -o kept", "kept = 1", "dropped = 2"))
    assert value_of(notebook, "(kept, dropped)") == "(1, None)"


def test_del_in_the_cell_deletes_the_name(notebook):
    notebook.run("scratch = [1, 2]")
    notebook.run(cell("%%scaler", "length = len(scratch)", "del scratch"))
    assert value_of(notebook, "(length, 'scratch' in dir())") == "(2, False)"


def test_a_large_numpy_array_goes_and_comes_back(notebook):
    notebook.run("import numpy as np; big = np.arange(50 * 2**20 // 8, dtype=np.float64)")
    notebook.run(cell("%%scaler", "total = float(big.sum())", "big2 = big * 2"))
    assert value_of(notebook, "total == float(big.sum())") == "True"
    assert value_of(notebook, "(big2.nbytes, bool(big2.flags.writeable), bool(big2[-1] == 2 * big[-1]))") == \
        f"({50 * 2**20}, True, True)"


def test_a_result_that_cannot_be_pickled_stays_on_the_worker_with_a_warning(notebook):
    out = notebook.run(cell("%%scaler", "import threading", "guard = threading.Lock()", "count = 3"))
    assert "'guard' stays on the worker" in out.stderr
    assert value_of(notebook, "(count, 'guard' in dir())") == "(3, False)"


# -- what the cell shows ----------------------------------------------------------------


def test_last_expression_displays_with_its_rich_repr(notebook):
    notebook.run(cell(
        "class Rich:",
        "    def _repr_html_(self): return '<b>rich</b>'",
    ))
    out = notebook.run(cell("%%scaler", "Rich()"))
    assert out.result["text/html"] == "<b>rich</b>"
    quiet = notebook.run(cell("%%scaler", "r = Rich()", "r;"))
    assert quiet.result is None


def test_printed_output_reaches_the_cell(notebook):
    out = notebook.run(cell("%%scaler", "import sys", "print('to stdout')", "print('to stderr', file=sys.stderr)"))
    assert out.stdout == "to stdout\n"
    assert out.stderr == "to stderr\n"


def test_output_streams_while_the_task_runs(notebook, tmp_path):
    go = tmp_path / "go"
    msg_id = notebook.client.execute(cell(
        "%%scaler", "print('waiting', flush=True)", *cell_lines_waiting_for(go), "print('released')",
    ))
    started = time.monotonic()
    wait_for_stream(notebook, msg_id, "waiting")  # printed before the task can end: it waits for the file
    go.touch()
    out = notebook.collect(msg_id, started, 60)
    assert "released" in out.stdout


def test_display_calls_are_replayed_in_order(notebook):
    notebook.run(cell(
        "class Shown:",
        "    def _repr_markdown_(self): return '**shown**'",
    ))
    out = notebook.run(cell("%%scaler", "print('before')", "display(Shown())", "display('plain', 3)"))
    assert out.stdout == "before\n"
    assert out.displays[0]["text/markdown"] == "**shown**"
    assert [bundle["text/plain"] for bundle in out.displays[1:]] == ["'plain'", "3"]


# -- errors ---------------------------------------------------------------------------


def test_an_exception_has_the_remote_traceback_in_the_cell_s_lines(notebook):
    out = notebook.run(cell("%%scaler", "x = 1", "def f(y):", "    return y / 0", "f(x)"), allow_error=True)
    assert out.error["ename"] == "ZeroDivisionError"
    text = "\n".join(out.error["traceback"])
    assert 'Cell In[' in text and 'line 5, in <module>' in text and 'line 4, in f' in text  # the notebook's lines
    assert "return y / 0" in text
    assert "cell_worker" not in text and "cell_magic" not in text  # none of the machinery's frames


def test_a_syntax_error_is_reported_before_anything_is_sent(notebook):
    submitted = "_scaler_client.status()['clients'][-1]['submitted']"
    before = value_of(notebook, submitted)
    out = notebook.run(cell("%%scaler", "x = 1", "y = = 2"), allow_error=True)
    text = "\n".join(out.error["traceback"])
    assert "line 3" in text and "y = = 2" in text and "SyntaxError: invalid syntax" in text
    assert value_of(notebook, submitted) == before


def test_an_unpicklable_variable_is_named_before_anything_is_sent(notebook):
    notebook.run("import threading; lock = threading.Lock(); n = 3")
    submitted = "_scaler_client.status()['clients'][-1]['submitted']"
    before = value_of(notebook, submitted)
    out = notebook.run(cell("%%scaler", "with lock:", "    m = n"), allow_error=True)
    assert out.error["ename"] == "SerializationError"
    assert "variable 'lock' (lock) cannot be sent" in out.error["evalue"]
    assert len(out.error["traceback"]) == 1  # one line, no traceback
    assert value_of(notebook, submitted) == before


def test_errors_of_the_magic_are_one_line(notebook):
    for line, expected in [
        ("%%scaler --timeout soon", "argument --timeout: not a number of seconds: 'soon'"),
        ("%%scaler --no-wait 2x", "argument --no-wait: not a Python name: '2x'"),
        ("%%scaler --map k", "argument --map: expected NAME=ITERABLE, got 'k'"),
        ("%%scaler --map k=undefined_name", "NameError: name 'undefined_name' is not defined"),
        ("%%scaler --bogus", "unrecognized arguments: --bogus"),
    ]:
        out = notebook.run(cell(line, "x = 1"), allow_error=True)
        assert out.status == "error", (line, out.text)
        [message] = out.stderr.strip().splitlines()
        assert message.startswith("UsageError: %%scaler") and expected in message, message
    magics = notebook.run(cell("%%scaler", "%time x = 1"), allow_error=True)
    assert "cannot run on a worker" in magics.stderr


def test_help(notebook):
    out = notebook.run(cell("%%scaler --help", "x = 1"))
    assert "--no-wait NAME" in out.stdout and "--map NAME=ITERABLE" in out.stdout


def test_no_cluster_is_one_line(notebook):
    notebook.run("%scaler stop")
    out = notebook.run(cell("%%scaler", "x = 1"), allow_error=True)
    notebook.run("get_ipython().run_line_magic('scaler', 'connect ' + _scaler_client.address)\n"
                 "_scaler_client = scaler_jupyter.current_client()")
    assert "no cluster: run %scaler start or %scaler connect ADDRESS" in out.stderr + out.text


def test_timeout_cancels_the_task(notebook, observer):
    out = notebook.run(cell("%%scaler --timeout 0.5", "import time", "time.sleep(60)"), allow_error=True)
    assert out.error["ename"] == "TimeoutError"
    assert "did not finish within 0.5s" in out.error["evalue"]
    wait_until(lambda: held_tasks(observer) == 0, 30, "the timed-out task to be cancelled")


def test_tags_no_worker_offers_wait_until_the_timeout(notebook, observer):
    out = notebook.run(cell("%%scaler --tags gpu --timeout 0.5", "x = 1"), allow_error=True)
    assert out.error["ename"] == "TimeoutError"
    wait_until(lambda: held_tasks(observer) == 0, 30, "the task to be cancelled")


def test_interrupting_the_kernel_cancels_the_remote_task(notebook, observer):
    msg_id = notebook.client.execute(cell("%%scaler", "import time", "print('started', flush=True)",
                                          "time.sleep(60)"))
    started = time.monotonic()
    wait_for_stream(notebook, msg_id, "started")
    notebook.interrupt()  # as the notebook's stop button does
    out = notebook.collect(msg_id, started, 30)
    assert out.error["ename"] == "KeyboardInterrupt"
    assert "cancelled" in "\n".join(out.error["traceback"])
    wait_until(lambda: held_tasks(observer) == 0, 30, "the interrupted task to be cancelled")


# -- --no-wait --------------------------------------------------------------------------


def test_no_wait_binds_a_future_and_sets_names_when_done(notebook, tmp_path):
    go = tmp_path / "go"
    out = notebook.run(cell(
        "%%scaler --no-wait job", *cell_lines_waiting_for(go), "answer = 42",
    ))
    assert out.error is None and out.result is None
    assert value_of(notebook, "(type(job).__name__, job.done(), 'answer' in dir())") == "('CellFuture', False, False)"
    go.touch()
    assert value_of(notebook, "sorted(job.result(timeout=30))") == "['answer', 'deadline', 'os', 'time']"
    assert value_of(notebook, "(answer, job.result()['answer'])") == "(42, 42)"


def test_no_wait_output_lands_in_its_own_cell(notebook, tmp_path):
    go = tmp_path / "go"
    first = notebook.client.execute(cell(
        "%%scaler --no-wait later", *cell_lines_waiting_for(go), "print('from the first cell')",
    ))
    notebook.collect(first, time.monotonic(), 30)  # the first cell is done; its task still runs
    go.touch()
    second = notebook.client.execute("later.result(timeout=30)")
    streams: dict[str, str] = {first: "", second: ""}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # every message until the second cell is idle
        message = notebook.client.get_iopub_msg(timeout=30)
        parent = message["parent_header"].get("msg_id")
        if message["msg_type"] == "stream" and parent in streams:
            streams[parent] += message["content"]["text"]
        if parent == second and message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    notebook.client.get_shell_msg(timeout=10)
    assert streams == {first: "from the first cell\n", second: ""}


def test_no_wait_failure_is_raised_by_the_future(notebook):
    notebook.run(cell("%%scaler --no-wait failing", "raise ValueError('bad input')"))
    out = notebook.run("failing.result(timeout=30)", allow_error=True)
    assert (out.error["ename"], out.error["evalue"]) == ("ValueError", "bad input")
    assert "line 2, in <module>" in "\n".join(out.error["traceback"])


# -- --map ------------------------------------------------------------------------------


def test_map_runs_once_per_item_and_brings_back_lists(notebook):
    notebook.run("offset = 100")
    out = notebook.run(cell("%%scaler --map k=range(5)", "square = k * k + offset", "print('item', k)", "square"))
    assert value_of(notebook, "square") == "[100, 101, 104, 109, 116]"
    assert out.result["text/plain"] == "[100, 101, 104, 109, 116]"
    assert value_of(notebook, "'k' in dir()") == "False"  # the map's name is the runs' own


def test_map_output_is_grouped_per_item_in_item_order(notebook):
    out = notebook.run(cell("%%scaler --map k=[3, 1, 2]", "import time", "time.sleep(k / 20)",
                            "print('item', k)", "print('again', k)"))
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines == [text for k in (3, 1, 2) for text in (f"[k={k}]", f"item {k}", f"again {k}")]
    assert out.comm_messages or "100%" in out.stderr  # the progress bar: a widget, or text where there is none


def test_map_runs_are_independent(notebook):
    notebook.run("import numpy as np; shared = np.zeros(3)")
    notebook.run(cell("%%scaler --map i=range(4)", "shared[0] += 1", "seen = float(shared[0])"))
    assert value_of(notebook, "seen") == "[1.0, 1.0, 1.0, 1.0]"  # each run has its own copy of the values
    assert value_of(notebook, "float(shared[0])") == "0.0"


def test_map_runs_in_parallel(notebook, tmp_path):
    # each run says it started, then waits (30 s at most) until both have: only runs at the same time see both
    notebook.run(f"rendezvous = {str(tmp_path)!r}")
    notebook.run(cell("%%scaler --map i=range(2)", "import os, time",
                      "open(os.path.join(rendezvous, f'started-{i}'), 'w').close()",
                      "deadline = time.monotonic() + 30",
                      "while len(os.listdir(rendezvous)) < 2 and time.monotonic() < deadline:",
                      "    time.sleep(0.01)",
                      "together = len(os.listdir(rendezvous)) == 2"))
    assert value_of(notebook, "together") == "[True, True]"


def test_map_failure_names_the_item(notebook):
    out = notebook.run(cell("%%scaler --map v=[1, 0, 2]", "r = 1 / v"), allow_error=True)
    assert out.error["ename"] == "ZeroDivisionError"
    text = "\n".join(out.error["traceback"])
    assert "the run with v=0 (item 1 of 3) failed" in text and "line 2, in <module>" in text


def test_map_with_no_wait(notebook):
    notebook.run(cell("%%scaler --no-wait sweep --map n=[1, 2, 3]", "cube = n ** 3"))
    assert value_of(notebook, "sweep.result(timeout=30)") == "{'cube': [1, 8, 27]}"
    assert value_of(notebook, "cube") == "[1, 8, 27]"


# -- provenance -------------------------------------------------------------------------


def test_tasks_remember_the_cell_that_submitted_them(notebook, observer):
    def origins() -> dict:
        return {label: count for client in observer.status()["clients"] for label, count in client["origins"].items()}

    out = notebook.run(cell("%%scaler --no-wait slow", "import time", "time.sleep(60)"))
    count = value_of(notebook, "get_ipython().execution_count - 1")
    assert out.error is None
    wait_until(lambda: origins().get(f"In [{count}]: import time") == 1, 30, "the cell's label in the snapshot")
    notebook.run("slow.cancel()")
    wait_until(lambda: not origins(), 30, "no live task left")
    # not only %%scaler cells: every task the kernel submits
    notebook.run(cell("import time", "_f = _scaler_client.submit(time.sleep, 60)"))
    count = value_of(notebook, "get_ipython().execution_count - 1")
    wait_until(lambda: origins().get(f"In [{count}]: import time") == 1, 30, "a submit's label in the snapshot")
    notebook.run("_f.cancel()")
    wait_until(lambda: not origins(), 30, "no live task left")

