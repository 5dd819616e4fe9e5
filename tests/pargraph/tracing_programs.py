"""The programs of test_tracing.py (the talk's report example, operators, subgraphs, partial binding,
outputs), each with the arguments of one call in ``CASES``; module-level, so a process pool finds every
function by reference.

The report example: two branches that share nothing until ``send_report``. When a file called
``rendezvous`` sits next to the inputs, the first task of each branch says it started and waits
(bounded) for the other's start, then logs its pid, its start and end times and whether it met the
other: only two tasks running at once can meet."""

from __future__ import annotations

import collections
import csv
import math
import os
import time
from pathlib import Path
from typing import Annotated

from scaler_jupyter.pargraph import Result, delayed, graph
from tests.pargraph.cases import Case, case
from tests.pargraph.engine_programs import add, inc

CASES: list[Case] = []  # this module's, checked by test_tracing.py

MEET_TIMEOUT = 10.0  # seconds a branch waits for the other one to start


@delayed
def read_file(path: str) -> str:
    started = time.time()
    met = meet(os.path.dirname(path), "read_file", "read_table")
    with open(path) as file:
        text = file.read()
    log_branch(os.path.dirname(path), "read_file", started, met)
    return text


@delayed
def preprocess(text: str) -> str:
    """Drop comments and blank lines, collapse spaces."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("#"))


@delayed
def read_table(path: str) -> list[dict[str, str]]:
    started = time.time()
    met = meet(os.path.dirname(path), "read_table", "read_file")
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    log_branch(os.path.dirname(path), "read_table", started, met)
    return rows


@delayed
def extract_emails(table: list[dict[str, str]]) -> list[str]:
    return sorted({row["email"].strip().lower() for row in table if "@" in row["email"]})


@delayed
def send_report(report: str, emails: list[str]) -> dict[str, str]:
    """The messages sent, by address."""
    return {email: f"To: {email}\nSubject: weekly report\n\n{report}" for email in emails}


@graph
def report(path: str, table: str) -> Annotated[dict, Result("sent")]:
    return send_report(preprocess(read_file(path)), extract_emails(read_table(table)))


REPORT_TEXT = "# weekly figures\n\nsales   up 3%\n\ncosts  flat\n"
USERS = "name,email\nAda,ada@example.com\nBob,BOB@example.com \nnobody,n/a\nAda again,ada@example.com\n"


def report_files(directory: Path) -> dict[str, str]:
    """The report's inputs, written into ``directory``."""
    (directory / "figures.txt").write_text(REPORT_TEXT)
    (directory / "users.csv").write_text(USERS)
    return {"path": str(directory / "figures.txt"), "table": str(directory / "users.csv")}


def meet(directory: str, me: str, other: str) -> bool | None:
    """With a ``rendezvous`` file in ``directory``: say ``me`` started, wait for ``other``; whether it came."""
    if not os.path.exists(os.path.join(directory, "rendezvous")):
        return None
    with open(os.path.join(directory, f"started-{me}"), "w"):
        pass
    deadline = time.monotonic() + MEET_TIMEOUT
    while not os.path.exists(os.path.join(directory, f"started-{other}")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def log_branch(directory: str, name: str, started: float, met: bool | None) -> None:
    if met is None:
        return
    fd = os.open(os.path.join(directory, "branches"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name} {os.getpid()} {started!r} {time.time()!r} {met}\n".encode())
    finally:
        os.close(fd)


CASES.append(Case("report", report, report_files))
CASES.append(Case("report/bound-path", report, report_files, bind=("path",)))


@delayed
def ident(x):
    return x


@delayed
def join(a, b="-"):
    return f"{a}|{b}"


@graph
def arithmetic(x, y):
    return (x + y, x - y, x * y, x / y, x // y, x % y, x**y, x << y, x >> 1, x & y, x | y, x ^ y, -x, +x, ~x,
            abs(-x), x + 0.5)


@graph
def reflected(x):
    return 1 + x, 10 - x, 3 * x, 1 / x, 7 // x, 7 % x, 2**x, 1 << x, 256 >> x, 6 & x, 6 | x, 6 ^ x


@graph
def comparisons(x, y):
    return x < y, x <= y, x == y, x != y, x > y, x >= y, 3 < x, 3 == x


@graph
def numeric(x, n):
    return round(x), round(x, 1), abs(x), divmod(n, 4), divmod(100, n), math.floor(x), math.ceil(x), math.trunc(x), \
        pow(n, 2, 5)


Point = collections.namedtuple("Point", "x y")


@graph
def items_and_attributes(record, z, text):
    return (record["name"].upper(), record["scores"][1:], record.get("missing", 0), z.real, z.imag,
            z.conjugate(), text.split(",")[1].strip(), Point(z.real, 2))


@graph
def text(name, n, price):
    return (f"hello {name}!", f"{n:03d}|{n!r}|{name!r}|{price:.2f}|{name:>6}", str(n), repr(name),
            format(price, ">8.1f"), "%s=%s" % (name, n),  # noqa: UP031 (the old formatting calls str() too)
            "-".join([str(n), str(name)]), join(f"<{name}>", b=str(n)), str(n) + name * 2)


@graph
def containers(x, y):
    return ident({"x": x, "both": [x, y], "pair": (x, 1), "set": {x, y}, "point": Point(x, y)}), [x, {"y": y}]


@graph
def keyword_calls(x, y):
    return join(b=x, a=y), join(x), join(a=ident(x))


@graph
def calling_a_traced_callable(function, x):
    return function(x), ident(function)(x)


@graph
def constants_that_look_like_keys(x):
    """Strings equal to keys of the dict, and a tuple shaped like a task, must reach the call as they are."""
    return join(x, "input-x"), join(x, "join-1"), ident((len, "abc")), ident([("x",)]), ident({"k": "input-x"})


case(CASES, arithmetic, {"x": 7, "y": 3})
case(CASES, reflected, {"x": 2})
case(CASES, comparisons, {"x": 2, "y": 3})
case(CASES, numeric, {"x": -2.55, "n": 9})
case(CASES, items_and_attributes, {
    "record": {"name": "ada", "scores": [1, 2, 3]}, "z": 3 + 4j, "text": "a, b ,c"})
case(CASES, text, {"name": "bob", "n": 5, "price": 2.5})
case(CASES, containers, {"x": 1, "y": 2})
case(CASES, keyword_calls, {"x": 1, "y": 2})
case(CASES, calling_a_traced_callable, {"function": abs, "x": -3})
case(CASES, constants_that_look_like_keys, {"x": "v"})


@graph
def inner(a, b=10) -> Annotated[int, Result("total")]:
    return add(inc(a), b)


@graph
def middle(a, b):
    return inner(a, b) * inner(b), inner(a, 0)


@graph
def outer(x, y):
    return middle(x, inner(y)), inner(x)


@graph
def passes_through(a, b) -> tuple[int, int]:
    return b, 7


@graph
def uses_pass_through(x):
    first, second = passes_through(inc(x), x)
    return add(first, second)


case(CASES, inner, {"a": 1})
case(CASES, middle, {"a": 1, "b": 2})
case(CASES, outer, {"x": 3, "y": 4})
case(CASES, outer, {"x": 3, "y": 4}, name="outer/bound-y", bind=("y",))
case(CASES, uses_pass_through, {"x": 5})


@graph
def scaled(values, factor, mode):
    if mode == "sum":  # ``mode`` is bound: control flow on it runs at trace time
        return add(values[0], values[1]) * factor
    return values[0] * factor


@graph
def stepped(x, step=1, times=2):
    return add(x, step) * times


case(CASES, scaled, {"values": [2, 3], "factor": 4, "mode": "sum"}, bind=("mode",))
case(CASES, scaled, {"values": [2, 3], "factor": 4, "mode": "first"}, name="scaled/first", bind=("mode",))
case(CASES, scaled, {"values": [2, 3], "factor": 4, "mode": "x"},
     name="scaled/bound-all", bind=("values", "factor", "mode"))
case(CASES, stepped, {"x": 1})
case(CASES, stepped, {"x": 1, "step": 5}, name="stepped/step")
case(CASES, stepped, {"x": 1, "times": 3}, name="stepped/bound-times", bind=("times",))


@graph
def named(x) -> tuple[Annotated[int, Result("doubled")], Annotated[str, Result("label")], int]:
    return x * 2, join(x), inc(x)


@graph
def same_output_twice(x) -> tuple[int, int]:
    y = inc(x)
    return y, y


@graph
def outputs_an_input_and_a_constant(x) -> tuple[Annotated[int, Result("x")], Annotated[int, Result("seven")]]:
    return x, 7


@delayed
def two_results(x) -> tuple[Annotated[int, Result("low")], Annotated[int, Result("high")]]:
    return x - 1, x + 1


@graph
def unpacks(x):
    low, high = two_results(x)
    return high - low


case(CASES, named, {"x": 4})
case(CASES, same_output_twice, {"x": 4})
case(CASES, outputs_an_input_and_a_constant, {"x": 4})
case(CASES, two_results, {"x": 4})
case(CASES, unpacks, {"x": 4})
