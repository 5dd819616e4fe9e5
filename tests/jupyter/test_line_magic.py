"""``%scaler`` in a real kernel: every verb, its errors, the cluster widget following a live cluster, and clusters'
lifetimes (a kernel's own cluster dies with it; a ``--keep`` one does not)."""

from __future__ import annotations

import json

from scaler_jupyter import clusters
from tests.helpers import alive, wait_until
from tests.jupyter.kernel import Kernel

WIDGET = "application/vnd.jupyter.widget-view+json"


def usage_error(output) -> str:
    """The one line a failed ``%scaler`` shows; the cell failed, with no traceback."""
    assert output.status == "error"
    assert output.error is None, output.error  # a UsageError is printed, not raised as a traceback
    lines = output.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UsageError: %scaler"), output.stderr
    return lines[0]


def evaluate(kernel: Kernel, expression: str) -> str:
    return kernel.run(f"print({expression})").stdout.strip()


def model_id(output) -> str:
    """The widget a cell displayed."""
    views = [bundle[WIDGET]["model_id"] for bundle in output.displays if WIDGET in bundle]
    assert len(views) == 1, output.displays
    return views[0]


def widget_expression(output) -> str:
    """Python, in the kernel, for the widget a cell displayed (found by its model id, as a front end does)."""
    return f"__import__('ipywidgets').widgets.widget._instances[{model_id(output)!r}]"


def records(kernel: Kernel) -> list[dict]:
    """The kernel's view of the cluster files (its runtime dir is the module's)."""
    return json.loads(evaluate(kernel, "__import__('json').dumps(__import__('scaler_jupyter').clusters"
                                       ".list_clusters())"))


def test_no_cluster_yet(kernel):
    for verb in ("status", "scale 2", "stop", "dashboard"):
        line = usage_error(kernel.run(f"%scaler {verb}", allow_error=True))
        assert "no cluster: run %scaler start or %scaler connect ADDRESS" in line
    error = kernel.run("import scaler_jupyter\nscaler_jupyter.current_client()", allow_error=True).error
    assert (error["ename"], error["evalue"]) == ("RuntimeError", "no cluster: run %scaler start or %scaler connect "
                                                                 "ADDRESS")


def test_usage_errors_are_one_line(kernel):
    assert "invalid choice: 'launch'" in usage_error(kernel.run("%scaler launch", allow_error=True))
    assert "not a whole number: 'two'" in usage_error(kernel.run("%scaler start -n two", allow_error=True))
    assert "must be 0 or more, not -1" in usage_error(kernel.run("%scaler scale -- -1", allow_error=True))
    assert "required: N" in usage_error(kernel.run("%scaler scale", allow_error=True))
    assert "required: VERB" in usage_error(kernel.run("%scaler", allow_error=True))
    assert "No closing quotation" in usage_error(kernel.run("%scaler connect 'tcp", allow_error=True))


def test_every_verb_has_help(kernel):
    for verb in ("start", "connect", "list", "status", "scale", "stop", "dashboard"):
        output = kernel.run(f"%scaler {verb} --help")
        assert output.status == "ok" and output.stdout.startswith(f"usage: %scaler {verb}"), output.text
    assert "start" in kernel.run("%scaler --help").stdout


def test_connect_errors(kernel):
    line = usage_error(kernel.run("%scaler connect tcp://127.0.0.1:9 --timeout 1", allow_error=True, timeout=20))
    # the client's words vary with timing ("no scheduler answered ... within 1s", "... has not answered for 1s")
    assert line.startswith("UsageError: %scaler connect:") and "tcp://127.0.0.1:9" in line and "1s" in line
    assert "no cluster 'nosuchid'" in usage_error(kernel.run("%scaler connect nosuchid", allow_error=True))


def test_start_scale_status_stop(kernel):
    """The kernel's own cluster: widget shown, files written and updated, Client() reuses it, stop ends it."""
    kernel.run("import scaler_jupyter")
    output = kernel.run("%scaler start -n 1", timeout=90)
    assert {WIDGET, "text/html", "text/plain"} <= set(output.displays[0])
    assert "1 worker;" in output.displays[0]["text/plain"]
    widget = widget_expression(output)
    [record] = records(kernel)
    assert record["n_workers"] == 1 and len(record["pids"]) == 2 and record["owner_pid"] == kernel.pid
    assert not record["detached"] and record["dashboard_address"].startswith("http://127.0.0.1:")
    assert evaluate(kernel, "scaler_jupyter.current_client().address") == record["address"]

    assert "already connected" in usage_error(kernel.run("%scaler start -n 1", allow_error=True))
    assert "2 workers at" in kernel.run("%scaler scale 2", timeout=60).stdout
    wait_until(lambda: evaluate(kernel, f"{widget}.n_workers") == "2", 10, "the widget to show 2 workers")
    assert "2 workers;" in evaluate(kernel, f"{widget}.view.value")
    [record] = records(kernel)
    assert record["n_workers"] == 2 and len(record["pids"]) == 3

    # Client() with no address reuses the kernel's cluster; its map works and its display is the widget
    output = kernel.run("c = scaler_jupyter.Client()\nprint(c.address, sum(c.map(abs, range(-3, 3))))\nc")
    assert output.stdout.split() == [record["address"], "9"]
    assert {WIDGET, "text/html", "text/plain"} <= set(output.result)
    status = kernel.run("%scaler status").stdout
    assert f"{record['address']}: 2 workers" in status and status.count("local-") == 2
    listing = kernel.run("%scaler list").stdout
    assert f"{record['id']} *" in listing
    dashboard = kernel.run("%scaler dashboard").stdout
    assert f"dashboard: {record['dashboard_address']}" in dashboard
    assert f"{record['dashboard_address']}workers" in dashboard

    kernel.run("c.shutdown()")
    assert f"stopped cluster {record['id']}" in kernel.run("%scaler stop", timeout=30).stdout
    assert not any(alive(pid) for pid in [*record["pids"], record["dashboard_pid"]])
    assert records(kernel) == []
    assert evaluate(kernel, f"{widget}.stop_button.disabled") == "True"


def test_widget_controls_scale_and_stop(kernel):
    """The widget's buttons do what the magic does: scale from 2 to 1 worker, then stop the cluster."""
    widget = widget_expression(kernel.run("%scaler start -n 2", timeout=90))
    [record] = records(kernel)
    kernel.run(f"w = {widget}\nw.count.value = 1\nw.scale_button.click()", timeout=60)
    wait_until(lambda: evaluate(kernel, "w.n_workers") == "1", 10, "the widget to show 1 worker")
    assert records(kernel)[0]["n_workers"] == 1
    kernel.run("w.stop_button.click()", timeout=30)
    assert evaluate(kernel, "w.scale_button.disabled, w.stop_button.disabled, 'stopped' in w.view.value") == \
        "True True True"
    assert records(kernel) == [] and not any(alive(pid) for pid in record["pids"])
    assert "no cluster" in usage_error(kernel.run("%scaler status", allow_error=True))


def test_tasks_no_worker_can_run_are_shown(kernel):
    """A task for tags no worker offers: once the scheduler says so, the widget and %scaler status say so too."""
    widget = widget_expression(kernel.run("%scaler start -n 1", timeout=90))
    try:
        kernel.run("import scaler_jupyter\n"
                   "lost = scaler_jupyter.current_client().submit_with(abs, (-1,), tags={'gpu'})")
        wait_until(lambda: "gpu" in evaluate(kernel, f"{widget}.view.value"), 30,
                   "the widget to say no worker offers gpu")
        assert "! " in kernel.run("%scaler status").stdout
    finally:
        kernel.run("%scaler stop")


def test_connect_by_id_and_address(kernel, runtime_dir, monkeypatch):
    """A cluster started elsewhere: connect by id or address; stop only disconnects."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime_dir))
    record = clusters.start_detached(1)
    try:
        output = kernel.run(f"%scaler connect {record['id'][:5]}")
        assert WIDGET in output.displays[0]
        assert evaluate(kernel, "scaler_jupyter.current_client().address") == record["address"]
        assert "1 worker at" in kernel.run("%scaler scale 1", timeout=60).stdout  # detached: scalable from here
        assert "disconnected" in kernel.run("%scaler stop").stdout
        kernel.run(f"%scaler connect {record['address']}")
        assert "disconnected" in kernel.run("%scaler stop").stdout
        assert all(alive(pid) for pid in record["pids"])
    finally:
        clusters.stop(record["id"])


def test_unload_removes_magics_and_displays(kernel):
    kernel.run("%unload_ext scaler_jupyter")
    error = kernel.run("%scaler list", allow_error=True)
    assert "Line magic function `%scaler` not found" in error.stderr + error.text
    kernel.run("from scaler_jupyter import LocalCluster, Client\n"
               "formatter = get_ipython().display_formatter.mimebundle_formatter")
    assert evaluate(kernel, "Client in formatter, LocalCluster in formatter") == "False False"
    kernel.run("%load_ext scaler_jupyter")
    assert kernel.run("%scaler list").status == "ok"
    assert evaluate(kernel, "Client in formatter, LocalCluster in formatter") == "True True"


def test_clusters_stop_with_the_kernel_unless_kept(tmp_path, runtime_dir, monkeypatch):
    """Shutting the kernel down ends its own cluster and its file; a --keep cluster stays, listed, until stopped."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime_dir))
    own_kernel = Kernel(tmp_path, env={"JUPYTER_RUNTIME_DIR": str(runtime_dir)})
    try:
        try:
            kept, extra = _start_three_clusters(own_kernel)
        finally:
            kernel_pid = own_kernel.pid
            own_kernel.shutdown()
        wait_until(lambda: not any(alive(pid) for pid in [kernel_pid, *extra["pids"]]), 30,
                   "the kernel and its own cluster to exit")
        assert [record["id"] for record in clusters.list_clusters()] == [kept["id"]]
        assert all(alive(pid) for pid in kept["pids"])
    finally:  # detached clusters are nobody's children: stop them here, pass or fail
        for record in clusters.list_clusters():
            if record["detached"]:
                clusters.stop(record["id"])
    assert not any(alive(pid) for pid in [*kept["pids"], kept["owner_pid"]])
    assert clusters.list_clusters() == []


def _start_three_clusters(own_kernel: Kernel) -> tuple[dict, dict]:
    """An own cluster (started and stopped), a kept one and one made from Python; the last two's records."""
    own_kernel.run("%load_ext scaler_jupyter")
    own_kernel.run("%scaler start -n 1", timeout=90)
    [own] = records(own_kernel)
    own_kernel.run("%scaler stop")
    output = own_kernel.run("%scaler start -n 1 --keep", timeout=90)
    assert "outlives this kernel" in output.stdout
    [kept] = records(own_kernel)
    assert kept["detached"] and kept["owner_pid"] != own_kernel.pid
    own_kernel.run("import scaler_jupyter\nfrom scaler_jupyter import LocalCluster\n"
                   "extra = LocalCluster(n_workers=1)")  # a cluster made from Python in the kernel
    shown = own_kernel.run("extra").result  # a LocalCluster displays as the widget, with its controls
    assert {WIDGET, "text/html", "text/plain"} <= set(shown) and "1 worker;" in shown["text/plain"]
    [extra] = [record for record in records(own_kernel) if record["id"] != kept["id"]]
    assert own["id"] != extra["id"] and extra["owner_pid"] == own_kernel.pid
    return kept, extra
