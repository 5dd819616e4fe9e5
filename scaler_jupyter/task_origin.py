"""Where tasks come from: the label a client attaches to every task it submits.

In a notebook, the notebook face sets :data:`current` before each cell runs
(``In [5]: x = simulate(3)``: the execution count and the first line of the cell's
body), so ``Client.status()``, the monitor feed and the task-stream panel show
which cell keeps the cluster busy. Elsewhere it stays None and tasks carry no label.
"""

from __future__ import annotations

current: str | None = None  # the label of tasks submitted from now on

MAX_LENGTH = 80  # a label is for a glance: long first lines are cut


def cell_label(execution_count: int, cell: str) -> str:
    """``In [n]: first line``: the first non-blank line of the cell's body, after a cell magic's own line."""
    lines = cell.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        lines = lines[1:]
    first = next((line.strip() for line in lines if line.strip()), "")
    label = f"In [{execution_count}]: {first}"
    return label if len(label) <= MAX_LENGTH else label[: MAX_LENGTH - 1] + "…"
