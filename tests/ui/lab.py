"""A real JupyterLab for the browser tests and ``benchmarks/lab.py``: the server, Debian's chromium, and page helpers.

``JupyterLab`` runs ``jupyter lab`` on a free port of 127.0.0.1 under a non-root base URL
(JupyterHub's shape, with a character that must be escaped), with its own config, data,
settings and workspace folders, so nothing of the user's Lab set-up leaks in. Its runtime dir is
the caller's ``JUPYTER_RUNTIME_DIR``: clusters started by the tests, the kernels and the
server then see the same cluster files. ``expose_app_in_browser`` makes ``window.jupyterapp``
available, so a test can run a Lab command (open a notebook, run all cells) as a menu would.

``Browser`` is Playwright for Python driving ``/usr/bin/chromium`` with the flags of
DESIGN.md section 6; Playwright never downloads a browser here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers import free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
BASE_URL = "/user/t%40ster/"  # non-root, with an escaped character, as JupyterHub's prefixes can be
TOKEN = "scaler-jupyter-ui-test"
START_TIMEOUT = 90.0  # seconds for Lab to answer, on a loaded 2-core machine

# Lab settings for a quiet, deterministic browser: no news or update checks (network), and notebooks that
# render every cell (the windowed mode recycles iframes and canvases out of view).
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


class JupyterLab:
    """``jupyter lab`` in a child process; ``close()`` stops it (and so its kernels)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{BASE_URL}"
        self._home = Path(tempfile.mkdtemp(prefix="scaler-jupyter-lab-"))
        settings = self._home / "settings"
        for name, values in SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(self._home / "config"),
                   JUPYTER_DATA_DIR=str(self._home / "data"), JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(self._home / "workspaces"), SCALER_JUPYTER_SMALL="1")
        self.log_path = self._home / "lab.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--ServerApp.base_url={BASE_URL}",
             f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={TOKEN}",
             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # containers and CI often run as root
            env=env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_until(self._ready, START_TIMEOUT, f"JupyterLab answering on {self.url} (log: {self.log_path})",
                       interval=0.2)
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"jupyter lab exited with {self.process.returncode}:\n{self.log()}")
        try:
            self.get("api/status")
            return True
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, bytes]:
        """``GET`` a path under the base URL with the token; the status and body (an error status too)."""
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"token {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def has_cluster_api(self) -> bool:
        """True if the server extension answers (it may not be installed on this branch)."""
        return self.get("scaler-jupyter/api/clusters")[0] == 200

    def page_url(self, path: str = "lab") -> str:
        """A Lab URL a browser can open: the token goes in once, then lives in a cookie."""
        return f"{self.url}{path}?token={TOKEN}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        """SIGTERM: the server shuts its kernels down (and a kernel's own cluster with it), then exits."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        shutil.rmtree(self._home, ignore_errors=True)


def write_notebook(path: Path, cells: list[str]) -> None:
    """A notebook file with these code cells, no outputs."""
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
