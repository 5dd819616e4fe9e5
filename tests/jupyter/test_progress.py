"""Progress bars: an ipywidgets bar in a notebook (also for a long ``Client.map``), a text bar in a terminal."""

from __future__ import annotations

import pytest

from scaler_jupyter import progress
from tests.helpers import connect

WIDGET = "application/vnd.jupyter.widget-view+json"


def bars(output) -> list[dict]:
    """The progress widgets a cell opened (tqdm's bar is a FloatProgress in an HBox)."""
    return [message for message in output.comm_messages
            if message.get("data", {}).get("state", {}).get("_model_name") == "FloatProgressModel"]


@pytest.fixture(scope="module")
def notebook(kernel):
    kernel.run("%scaler start -n 2\nimport time, scaler_jupyter\nclient = scaler_jupyter.current_client()",
               timeout=90)
    yield kernel
    kernel.run("%scaler stop")


def test_progress_over_futures_in_a_notebook(notebook):
    output = notebook.run("futures = [client.submit(time.sleep, 0.05) for _ in range(6)]\n"
                          "done = scaler_jupyter.progress(futures)\n"
                          "print(done is futures, all(f.done() for f in futures))")
    assert output.stdout.split() == ["True", "True"]
    [bar] = bars(output)
    assert bar["data"]["state"]["max"] == 6
    assert any(WIDGET in bundle for bundle in output.displays)


def test_progress_over_an_iterator_in_a_notebook(notebook):
    output = notebook.run("print(sum(scaler_jupyter.progress(client.map(abs, range(-3, 3)), total=6)))")
    assert output.stdout.strip() == "9"
    assert bars(output)


def test_a_long_map_shows_a_bar_a_short_one_does_not(notebook):
    short = notebook.run("print(sum(client.map(abs, range(-3, 3))))")
    assert short.stdout.strip() == "9" and not bars(short)
    long = notebook.run("print(len(list(client.map(time.sleep, [0.3] * 10))))", timeout=60)
    assert long.stdout.strip() == "10"
    [bar] = bars(long)
    assert bar["data"]["state"]["max"] == 10


def test_a_text_bar_in_a_terminal(cluster, capsys):
    with connect(cluster.address) as client:
        futures = [client.submit(abs, -i) for i in range(5)]
        assert progress(futures) is futures
        assert list(progress(client.map(abs, [-1, -2]), total=2)) == [1, 2]
        assert list(client.map(abs, [-1])) == [1]  # no bar outside a notebook
    err = capsys.readouterr().err
    assert "5/5" in err and "2/2" in err and "1/1" not in err
