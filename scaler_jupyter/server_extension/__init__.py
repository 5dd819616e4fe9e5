"""The jupyter-server extension: the clusters' REST API and a proxy to their dashboards.

Enabled on install (``jupyter-config/server-config/scaler_jupyter.json`` goes to
``etc/jupyter/jupyter_server_config.d``). Under ``{base_url}scaler-jupyter/``:

- ``api/clusters``: ``GET`` lists the clusters of this machine's cluster files; ``POST
  {"n_workers": N, "tags": [...]}`` starts a detached one (201). ``api/clusters/{id}``: ``GET``,
  ``PATCH {"n_workers": N}`` (200), ``DELETE`` (204). Errors are ``{"message": "one line"}`` with
  400 (bad input: nothing started), 404 (no such cluster), 409 (a cluster only its owner can scale).
  The cluster model is :func:`~scaler_jupyter.server_extension.api.cluster_model`'s.
- ``dashboard/{id}/...``: the cluster's dashboard server (HTTP and websockets), see :mod:`.proxy`.

The server owns no cluster: clusters are processes of their own, recorded in cluster files
(:mod:`scaler_jupyter.clusters`), so they outlive a server restart and those started from a kernel
or the command line are listed too. Everything that blocks (starting, scaling, stopping, asking a
scheduler for its snapshot, reading cluster files) runs in a thread pool, off the server's event loop.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from jupyter_server.utils import url_path_join

POOL_SETTING = "scaler_jupyter_pool"
_POOL_THREADS = 8  # concurrent starts, stops and snapshot requests; more wait their turn


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "scaler_jupyter.server_extension"}]


def _load_jupyter_server_extension(server_app) -> None:
    """Add the REST and proxy routes under the server's base_url."""
    from scaler_jupyter.server_extension.handlers import ClusterHandler, ClustersHandler
    from scaler_jupyter.server_extension.proxy import DashboardProxyHandler

    web_app = server_app.web_app
    base_url = web_app.settings["base_url"]
    root = url_path_join(base_url, "scaler-jupyter")
    web_app.settings[POOL_SETTING] = ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix="scaler-jupyter")
    web_app.add_handlers(".*$", [
        (url_path_join(root, "api", "clusters"), ClustersHandler),
        (url_path_join(root, "api", "clusters", "([^/]+)"), ClusterHandler),
        (url_path_join(root, "dashboard", "([^/]+)") + "(/.*)?", DashboardProxyHandler),
    ])
    server_app.log.info("scaler_jupyter: clusters API and dashboard proxy at %s", root)

