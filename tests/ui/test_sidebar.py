"""The Scaler sidebar in a real JupyterLab, against the real server extension, under a non-root base URL.

Clusters started here live in this test run's own runtime dir; every one is stopped when the
module ends. The sidebar and a dashboard tab are the README's pictures (``make pictures``).
"""

from __future__ import annotations

import time

import pytest

from tests.ui.lab import write_notebook
from tests.ui.notebook import Notebook
from tests.ui.sidebar import RAF_GAP, RAF_PROBE, Sidebar, start_from_command_line, stop_all


@pytest.fixture(scope="module", autouse=True)
def api(lab):
    """The server extension's REST API (skip the module if this install has none), and a clean slate after."""
    if not lab.has_cluster_api():
        pytest.skip("the server extension does not answer under scaler-jupyter/api/clusters")
    yield
    stop_all()


@pytest.fixture(scope="module")
def cli_cluster():
    """A detached cluster with one worker, started from the command line."""
    return start_from_command_line(1)


def test_sidebar_lists_a_cluster_started_from_the_command_line(lab, page, cli_cluster):
    page.goto(lab.page_url())
    sidebar = Sidebar(page)
    sidebar.open()
    sidebar.wait_workers(cli_cluster, 1)
    assert cli_cluster in sidebar.cluster(cli_cluster).locator(".sj-Cluster-id").inner_text()
    assert page.console_errors == []


def test_start_scale_watch_and_stop_from_the_sidebar(lab, page, picture, record_property):
    page.goto(lab.page_url())
    sidebar = Sidebar(page)
    sidebar.open()
    sidebar.node.locator(".sj-Cluster").first.wait_for()  # the first poll is in
    before = sidebar.ids()

    page.evaluate(RAF_PROBE)
    clicked = sidebar.click_new_cluster(2)
    new = sidebar.wait_new_cluster(before, 2)
    record_property("new_cluster_listed_seconds", time.perf_counter() - clicked)  # a figure, not an assertion

    sidebar.scale(new, 3)
    sidebar.wait_workers(new, 3)
    record_property("longest_frame_gap_ms", page.evaluate(RAF_GAP))  # benchmarks/lab.py prints it with its target

    panels = sidebar.cluster(new).locator(".sj-Panel")
    panels.first.wait_for()
    names = panels.evaluate_all("nodes => nodes.map(n => n.dataset.panel)")
    cpu = next(name for name in names if "worker" in name or "cpu" in name)
    sidebar.cluster(new).locator(f".sj-Panel[data-panel='{cpu}']").click()
    tab = page.locator(".sj-DashboardTab:not(.lm-mod-hidden)")
    tab.frame_locator("iframe").locator("canvas").first.wait_for(timeout=60_000)  # a live Bokeh canvas
    picture(page.locator("#main"), "lab-dashboard-tab.png")  # the whole Lab window: the sidebar and the tab

    sidebar.stop(new)
    assert page.console_errors == []


def test_insert_connect_code_and_run_it(lab, page, cli_cluster):
    write_notebook(lab.root / "connect.ipynb", ["print('a notebook')"])
    notebook = Notebook(page, lab, "connect.ipynb")
    sidebar = Sidebar(page)
    sidebar.open()
    sidebar.wait_workers(cli_cluster, 1)

    sidebar.cluster(cli_cluster).get_by_role("button", name="Insert connect code").click()
    code = notebook.cell(1).locator(".jp-InputArea-editor")
    code.get_by_text("from scaler_jupyter import Client").wait_for()
    notebook.run(1)

    page.evaluate("""() => { const nb = window.jupyterapp.shell.currentWidget.content;
        nb.activeCellIndex = 1; window.jupyterapp.commands.execute('notebook:insert-cell-below');
        nb.activeCell.model.sharedModel.setSource('print(client.submit(pow, 2, 10).result())'); }""")
    notebook.run(2)
    notebook.output(2).get_by_text("1024").wait_for()
    # The server maps the scheduler's clients to Lab's kernels: the notebook is listed as connected.
    sidebar.cluster(cli_cluster).locator(".sj-Kernels:not(:has-text('none'))").wait_for()
