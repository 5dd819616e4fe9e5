"""The notebook face: ``%load_ext scaler_jupyter`` registers the ``%scaler`` / ``%%scaler`` magics and rich displays."""

from __future__ import annotations


def load_ipython_extension(ipython) -> None:
    """Called by ``%load_ext scaler_jupyter``."""
    from scaler_jupyter.jupyter.magics import ScalerMagics

    ipython.register_magics(ScalerMagics)


def unload_ipython_extension(ipython) -> None:
    """Called by ``%unload_ext scaler_jupyter``: the magics are gone afterwards."""
    magics = ipython.magics_manager.magics
    magics["line"].pop("scaler", None)
    magics["cell"].pop("scaler", None)
