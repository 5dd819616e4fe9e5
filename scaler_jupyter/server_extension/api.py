"""The clusters API's rules, without a server: what a request may say, and what a cluster looks like.

A cluster (the JSON the API returns) is::

    {"id", "address", "n_workers", "tags", "detached", "started", "owner_pid",
     "dashboard": {"url": "{base_url}scaler-jupyter/dashboard/{id}/",
                   "panels": [{"name", "title", "path"}, ...]} or null,
     "workers": [{"name", "cpu", "memory", "queued", "running"}, ...],
     "tasks": {state: count, ...},
     "kernels": [{"id", "name", "path"}, ...],
     "error": null or why the scheduler could not be asked}

``kernels`` are the Jupyter kernels among the scheduler's clients, found by process id (a client
in a kernel, or in a process a kernel started), never by running code in a kernel.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping

from jupyter_server.utils import url_path_join

from scaler_jupyter.dashboard import PANELS

MAX_WORKERS = 16 * (os.cpu_count() or 1)  # local workers beyond this only thrash this machine: surely a typo
_TAG = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # a tag travels in a comma-separated argument
_MAX_TAGS = 32


class BadRequest(ValueError):
    """The request cannot be served as it is (a 400); the message says why, in one line."""


def parse_body(body: bytes, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    """The request's JSON object, with only ``allowed`` fields and every ``required`` one."""
    try:
        request = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(request, dict):
        raise BadRequest(f"the body must be a JSON object with {', '.join(allowed)}")
    unknown = sorted(set(request) - set(allowed))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}: only {', '.join(allowed)} are known")
    missing = [field for field in required if field not in request]
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(missing)}")
    return request


def n_workers(value: object) -> int:
    """A valid worker count: an integer from 0 to ``MAX_WORKERS``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"n_workers must be an integer, not {json.dumps(value)[:40]}")
    if not 0 <= value <= MAX_WORKERS:
        raise BadRequest(f"n_workers must be from 0 to {MAX_WORKERS} on this machine, not {value}")
    return value


def tags(value: object) -> tuple[str, ...]:
    """Valid worker tags: a list of short words (letters, digits, ``_.:-``)."""
    if not isinstance(value, list) or len(value) > _MAX_TAGS:
        raise BadRequest(f"tags must be a list of at most {_MAX_TAGS} strings")
    for tag in value:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise BadRequest(f"tag {json.dumps(tag)[:40]} is not a word of letters, digits and _.:-")
    return tuple(value)


def parse_start(body: bytes) -> tuple[int, tuple[str, ...]]:
    """``POST`` body -> (n_workers, tags)."""
    request = parse_body(body, ("n_workers", "tags"), ("n_workers",))
    return n_workers(request["n_workers"]), tags(request.get("tags", []))


def parse_scale(body: bytes) -> int:
    """``PATCH`` body -> n_workers."""
    return n_workers(parse_body(body, ("n_workers",), ("n_workers",))["n_workers"])


def cluster_model(record: Mapping, snapshot: Mapping | None, kernels: list[dict], base_url: str,
                  error: str | None = None) -> dict:
    """A cluster file's record, its scheduler's snapshot (None if it did not answer) and its connected
    kernels, as the API shows them."""
    dashboard = None
    if record.get("dashboard_address"):
        dashboard = {"url": url_path_join(base_url, "scaler-jupyter", "dashboard", record["id"]) + "/",
                     "panels": [panel.to_json() for panel in PANELS]}
    workers = [] if snapshot is None else [
        {"name": w["name"], "cpu": w["cpu"], "memory": w["memory"], "queued": w["queued"], "running": w["running"]}
        for w in snapshot.get("workers", [])]
    return {
        "id": record["id"],
        "address": record["address"],
        "dashboard": dashboard,
        "n_workers": record["n_workers"],
        "tags": list(record.get("tags", [])),
        "detached": bool(record.get("detached")),
        "workers": workers,
        "tasks": {} if snapshot is None else dict(snapshot.get("tasks", {})),
        "kernels": kernels,
        "started": record["started"],
        "owner_pid": record["owner_pid"],
        "error": error,
    }


def connected_kernels(snapshot: Mapping | None, kernel_pids: Mapping[int, dict],
                      ancestors: Callable[[int], list[int]]) -> list[dict]:
    """The kernels (``kernel_pids``: a kernel's process id -> its description) that are, or started, a
    client of the scheduler; ``ancestors(pid)`` lists a process's parents, nearest first."""
    found: dict[str, dict] = {}
    for client in [] if snapshot is None else snapshot.get("clients", []):
        for pid in (client["pid"], *ancestors(client["pid"])):
            kernel = kernel_pids.get(pid)
            if kernel is not None:
                found.setdefault(kernel["id"], kernel)
                break
    return list(found.values())
