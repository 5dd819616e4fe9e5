"""The install: Jupyter finds both extensions enabled and valid, as `pip install .` leaves them."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest


def jupyter(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "jupyter", *args], capture_output=True, text=True, timeout=120,
                          check=True)
    return re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # without the colours


def test_labextension_listed_enabled_and_ok():
    listed = jupyter("labextension", "list")
    assert re.search(r"scaler-jupyter v\S+ enabled OK \(python, scaler_jupyter\)", listed), listed


@pytest.mark.skipif(importlib.util.find_spec("scaler_jupyter.server_extension") is None,
                    reason="the server extension (branch lab-server) is not in this tree")
def test_server_extension_listed_enabled_and_ok():
    listed = jupyter("server", "extension", "list")
    assert re.search(r"scaler_jupyter\.server_extension enabled\s+- Validating scaler_jupyter\.server_extension"
                     r"\.\.\.\s+.*OK", listed), listed
