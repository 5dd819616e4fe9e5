"""Fixtures of the notebook-face tests: a real kernel per module, in a folder outside the repository."""

from __future__ import annotations

import pytest

from tests.jupyter.kernel import Kernel


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory):
    """A Jupyter runtime dir of the module's own, so cluster files never mix with the user's or other tests'."""
    return tmp_path_factory.mktemp("jupyter-runtime")


@pytest.fixture(scope="module")
def kernel(tmp_path_factory, runtime_dir):
    """An IPython kernel with ``%load_ext scaler_jupyter`` done, working in a fresh folder."""
    cwd = tmp_path_factory.mktemp("notebook")
    instance = Kernel(cwd, env={"JUPYTER_RUNTIME_DIR": str(runtime_dir)})
    try:
        instance.run("%load_ext scaler_jupyter")
        yield instance
    finally:
        instance.shutdown()
