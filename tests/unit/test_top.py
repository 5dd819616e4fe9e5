"""What ``scaler-jupyter top`` draws for a snapshot, and how keys change it: no terminal, no sockets."""

from __future__ import annotations

import pytest
from rich.console import Console

from scaler_jupyter.monitor import feed_address
from scaler_jupyter.top import STALE_AFTER, TopView, render


def worker(name: str, cpu: float, memory: int, queued: int = 0) -> dict:
    return {"id": 1, "name": name, "host": "node", "pid": 7, "tags": ["gpu"], "processors": 2, "cpu": cpu,
            "memory": memory, "queued": queued, "running": 1, "done": 5, "heartbeat_lag": 0.2}


SNAPSHOT = {
    "version": 1, "time": 0.0,
    "scheduler": {"address": "tcp://127.0.0.1:2345", "monitor_address": "tcp://127.0.0.1:2346", "pid": 42,
                  "uptime": 3725.0, "cpu": 3.5, "memory": 50 * 2**20, "tasks_per_second": 1234.5,
                  "objects": 2, "object_bytes": 2048},
    "tasks": {"pending": 7, "assigned": 6, "queued": 3, "running": 3, "held": 13, "finished": 99},
    "workers": [worker("beta", 90.0, 10 * 2**20, 2), worker("alpha", 10.0, 30 * 2**20), worker("gamma", 50.0, 20)],
    "clients": [{"id": 4, "name": "nb", "host": "h", "pid": 1, "tasks": 13, "submitted": 112, "done": 99}],
    "graphs": [],
}


def screen(view: TopView, now: float = 0.0, height: int = 40) -> str:
    console = Console(record=True, width=160, height=height, highlight=False, color_system=None)
    console.print(render(view, now, height))
    return console.export_text()


def names_in_order(text: str) -> list[str]:
    return sorted(("alpha", "beta", "gamma"), key=text.index)


def test_the_screen_shows_the_header_and_every_worker():
    text = screen(TopView("tcp://127.0.0.1:2345", SNAPSHOT, received=0.0))
    assert "tcp://127.0.0.1:2345" in text and "up 01:02:05" in text
    assert "CPU 3.5%" in text and "50.0 MiB" in text and "1,234.5 tasks/s" in text
    assert "7 pending" in text and "3 queued" in text and "3 running" in text and "99 finished" in text
    assert "Workers 3 (6 processors)" in text and "Clients 1" in text
    for column in ("NAME", "HOST", "PID", "TAGS", "PROC", "CPU%", "MEMORY", "QUEUED", "RUNNING", "DONE", "LAG"):
        assert column in text
    assert names_in_order(text) == ["alpha", "beta", "gamma"]  # by name at first
    assert "q quit" in text


def test_keys_sort_the_workers_and_again_reverse():
    view = TopView("tcp://x:1", SNAPSHOT, received=0.0)
    assert view.press("c")
    assert names_in_order(screen(view)) == ["beta", "gamma", "alpha"]  # CPU, busiest first
    assert view.press("c")
    assert names_in_order(screen(view)) == ["alpha", "gamma", "beta"]
    assert view.press("m")
    assert names_in_order(screen(view)) == ["alpha", "beta", "gamma"]  # memory, largest first
    assert view.press("u")
    assert names_in_order(screen(view))[0] == "beta"  # the one with a queue
    assert view.press("x")  # not a key: nothing changes
    assert not view.press("q")


def test_a_silent_feed_shows_in_the_header():
    view = TopView("tcp://x:1", SNAPSHOT, received=0.0)
    assert "no snapshot" not in screen(view, now=1.0)
    assert "no snapshot for" in screen(view, now=STALE_AFTER + 2)


def test_more_workers_than_lines_are_counted_not_drawn():
    many = dict(SNAPSHOT, workers=[worker(f"w{i:03d}", 1.0, 1) for i in range(100)])
    text = screen(TopView("tcp://x:1", many, received=0.0), height=30)
    assert "w000" in text and "w099" not in text and "more" in text
    assert "q quit" in text


def test_no_workers():
    assert "no workers connected" in screen(TopView("tcp://x:1", dict(SNAPSHOT, workers=[]), received=0.0))


@pytest.mark.parametrize(("published", "scheduler", "expected"), [
    ("tcp://127.0.0.1:2346", "tcp://127.0.0.1:2345", "tcp://127.0.0.1:2346"),
    ("tcp://0.0.0.0:2346", "tcp://head-node:2345", "tcp://head-node:2346"),  # bound on every interface
    ("tcp://[::]:2346", "tcp://[fe80::1]:2345", "tcp://[fe80::1]:2346"),
])
def test_feed_address_is_reachable_from_here(published, scheduler, expected):
    assert feed_address({"scheduler": {"monitor_address": published}}, scheduler) == expected


def test_feed_address_missing():
    assert feed_address({"scheduler": {}}, "tcp://x:1") is None
