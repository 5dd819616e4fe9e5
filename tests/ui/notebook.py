"""Driving a notebook in JupyterLab from a test: open it, run a cell as the Run menu would, read its output."""

from __future__ import annotations

from tests.ui.lab import JupyterLab

CELL_TIMEOUT = 60_000  # ms for one cell to run

# Run the cell at `index` of the current notebook with Lab's own command; resolve when it has run.
_RUN_CELL = """async ([index, timeout]) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  panel.content.activeCellIndex = index;
  const run = app.commands.execute('notebook:run-cell');
  const late = new Promise((_, reject) =>
    setTimeout(() => reject(new Error('cell ' + index + ' still running')), timeout));
  return await Promise.race([run, late]);
}"""

# True once the current widget is a notebook whose kernel is ready and idle.
_KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected';
}"""


class Notebook:
    """One notebook open in Lab's main area."""

    def __init__(self, page, lab: JupyterLab, name: str) -> None:
        self.page = page
        page.goto(lab.page_url(f"lab/tree/{name}"))
        page.wait_for_function(_KERNEL_IDLE, timeout=90_000)

    def cell(self, index: int):
        """The locator of the cell at ``index``."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)

    def output(self, index: int):
        """The locator of the cell's output area."""
        return self.cell(index).locator(".jp-OutputArea")

    def run(self, index: int) -> None:
        """Run one cell as Shift+Enter would, and wait until it has finished."""
        self.page.evaluate(_RUN_CELL, [index, CELL_TIMEOUT])
