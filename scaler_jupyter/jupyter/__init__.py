"""The notebook face: ``%load_ext scaler_jupyter`` registers the ``%scaler`` / ``%%scaler`` magics and rich displays."""

from __future__ import annotations

from scaler_jupyter import task_origin


def load_ipython_extension(ipython) -> None:
    """Called by ``%load_ext scaler_jupyter``: the magics, and the cluster widget as the display of
    ``Client`` and ``LocalCluster``."""
    from scaler_jupyter import Client, LocalCluster, SSHCluster
    from scaler_jupyter.jupyter.magics import ScalerMagics
    from scaler_jupyter.jupyter.widget import mimebundle

    ipython.register_magics(ScalerMagics)
    formatter = ipython.display_formatter.mimebundle_formatter
    for cls in (Client, LocalCluster, SSHCluster):
        formatter.for_type(cls, mimebundle)
    ipython.events.register("pre_run_cell", _record_cell)


def unload_ipython_extension(ipython) -> None:
    """Called by ``%unload_ext scaler_jupyter``: the magics and the rich displays are gone afterwards."""
    magics = ipython.magics_manager.magics
    magics["line"].pop("scaler", None)
    magics["cell"].pop("scaler", None)
    from scaler_jupyter import Client, LocalCluster, SSHCluster

    formatter = ipython.display_formatter.mimebundle_formatter
    for cls in (Client, LocalCluster, SSHCluster):
        formatter.pop(cls, None)
    ipython.events.unregister("pre_run_cell", _record_cell)
    task_origin.current = None


def _record_cell(info) -> None:
    """Label the tasks the cell about to run submits with it: ``Client.status()`` and the panels show it."""
    from IPython import get_ipython  # not at the top: workers import this package to run %%scaler cells

    shell = get_ipython()
    task_origin.current = task_origin.cell_label(shell.execution_count, info.raw_cell or "")
