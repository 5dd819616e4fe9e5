"""A notebook's ``sys.path.append("../src")`` reaches the workers of its cluster, and the cell shows only what
it printed."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.timeout(180)

CELL_TIMEOUT = 90.0


def test_a_folder_a_notebook_appends_to_sys_path_reaches_its_workers(kernel):
    name = f"nb_helpers_{uuid.uuid4().hex[:8]}"
    src = kernel.cwd.parent / f"src_{name}"  # beside the notebook's folder, as a project's src/ is
    src.mkdir()
    (src / f"{name}.py").write_text("def halve(x):\n    return x // 2\n")
    out = kernel.run(f"import sys\n"
                     f"sys.path.append('../{src.name}')\n"
                     f"from {name} import halve\n"
                     f"from scaler_jupyter import Client\n"
                     f"client = Client()\n"
                     f"print(list(client.map(halve, [2, 4, 6])))", timeout=CELL_TIMEOUT)
    assert out.status == "ok", out.text
    assert out.stdout == "[1, 2, 3]\n"
    out_closed = kernel.run("client.shutdown()", timeout=CELL_TIMEOUT)
    assert out_closed.status == "ok", out_closed.text
    assert out.stderr == "" and out_closed.stderr == "", "the engine logged into the notebook"
