"""The notebook face in a real JupyterLab: the cluster widget, a live Bokeh panel and a ``%%scaler`` cell.

These need no server extension: a kernel starts its own cluster. The widget and the panel are
the README's pictures (``make pictures``).
"""

from __future__ import annotations

from tests.ui.lab import write_notebook
from tests.ui.notebook import Notebook

CELLS = [
    "%load_ext scaler_jupyter",
    "%scaler start -n 2",
    # some work, so the panel has CPU to show
    "from scaler_jupyter import current_client, panels\n"
    "client = current_client()\n"
    "def spin(seconds):\n"
    "    import time\n"
    "    end = time.perf_counter() + seconds\n"
    "    while time.perf_counter() < end:\n"
    "        pass\n"
    "    return seconds\n"
    "busy = [client.submit(spin, 5.0) for _ in range(4)]\n"
    "panels.workers(client)",
    "%%scaler\nanswer = 6 * 7\nprint(f'the answer, from a worker: {answer}')",
    "panels.close_all()\n%scaler stop",
]

# True once the page's Bokeh document shows both workers by name, with some CPU for one of them.
_BUSY_WORKERS_DRAWN = """() => {
  for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
    const models = Array.from(doc.all_models);
    const named = models.some(m => m.factors !== undefined && m.factors.length === 2);
    const busy = models.some(m => m.data && m.data.cpu && Array.from(m.data.cpu).some(cpu => cpu > 30));
    if (named && busy) { return true; }
  }
  return false;
}"""


def test_lab_loads_with_the_scaler_sidebar_and_no_console_errors(lab, page):
    page.goto(lab.page_url())
    page.locator(".jp-SideBar [data-id='scaler-jupyter-sidebar']").wait_for()
    page.wait_for_function("() => window.jupyterapp?.commands.hasCommand('scaler-jupyter:new-cluster')")
    assert page.console_errors == []


def test_widget_panel_and_cell_magic(lab, page, picture):
    write_notebook(lab.root / "widget.ipynb", CELLS)
    notebook = Notebook(page, lab, "widget.ipynb")

    notebook.run(0)
    notebook.run(1)
    widget = notebook.output(1)
    widget.get_by_text("2 workers").wait_for()  # the widget follows the live feed: both workers joined
    widget.locator(".jupyter-widgets button", has_text="Scale").wait_for()

    notebook.run(2)
    panel = notebook.output(2)
    panel.locator("canvas").first.wait_for()  # BokehJS drew the panel
    page.wait_for_function(_BUSY_WORKERS_DRAWN, timeout=30_000)  # live in the browser: names and CPU arrived
    picture(panel, "notebook-panel.png")
    widget.get_by_text("running", exact=False).first.wait_for()
    picture(widget, "notebook-widget.png")  # now with its workers busy

    notebook.run(3)
    notebook.output(3).get_by_text("the answer, from a worker: 42").wait_for()

    notebook.run(4)
    assert not [e for e in page.console_errors if "scaler" in e.lower()], page.console_errors
