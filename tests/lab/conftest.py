"""pytest-jupyter's fixtures for the JupyterLab tests only: a real jupyter-server in this process, under
``jp_base_url`` (``/a%40b/``), with the scaler_jupyter server extension enabled.

Imported here rather than listed in ``pytest_plugins`` so that their autouse fixtures (an event loop, a
server clean-up) stay out of the other test folders.
"""

from __future__ import annotations

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"scaler_jupyter.server_extension": True},
                          "allow_unauthenticated_access": False}}
