"""Citi's own public test suites of parfun 7.2.2 and pargraph 0.9.6, run on ours and on theirs, side by side.

The drop-in promise (DESIGN sections 4 and 5, the README's migration section) is that a Citi user
changes only import lines. This script checks it as such a user would: it copies the ``tests/``
folders of Citi's release tags out of local git snapshots of their public repositories into a
temporary directory (nothing of theirs is kept in this repository), rewrites the import lines
(``parfun`` -> ``scaler_jupyter.parfun``, ``pargraph`` -> ``scaler_jupyter.pargraph``) and runs
pytest on them with this project's Python; then it runs the unmodified copies with a Python that
has Citi's packages installed, and prints the pass counts of both, and each test that fails on ours.

Usage::

    pip install -e ".[test,dask]" loky                          # ours (make .venv/.test); loky is in ".[bench]"
    python3 -m venv /tmp/citi-venv && /tmp/citi-venv/bin/pip install \\
        "parfun[pandas,dask]==7.2.2" "scaler==1.9.9" "pargraph==0.9.6" pytest       # theirs, in a separate venv
    python benchmarks/citi_suites.py --citi-python /tmp/citi-venv/bin/python

Options: ``--parfun-repo``/``--pargraph-repo`` (git directories holding the tags, default the
snapshots under /work/.mirror), ``--citi-python`` (omit to run ours only), ``-k`` (passed to pytest).
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

SUITES = {
    # name: (default git directory, release tag)
    "parfun": ("/work/.mirror/Citi+parfun/repo", "v7.2.2"),
    "pargraph": ("/work/.mirror/Citi+pargraph/repo", "v0.9.6"),
}

# `from parfun.x import y`, `import parfun.x as y`, and a bare `import parfun` (bound to its old name).
_FROM = re.compile(r"^(\s*)from (parfun|pargraph)([.\s])", re.MULTILINE)
_IMPORT_AS = re.compile(r"^(\s*)import (parfun|pargraph)(\.[\w.]+)? as ", re.MULTILINE)
_IMPORT_BARE = re.compile(r"^(\s*)import (parfun|pargraph)\s*$", re.MULTILINE)


def map_imports(source: str) -> str:
    """Rewrite Citi's import lines to ours: the only change a Citi user makes."""
    source = _FROM.sub(r"\1from scaler_jupyter.\2\3", source)
    source = _IMPORT_AS.sub(r"\1import scaler_jupyter.\2\3 as ", source)
    return _IMPORT_BARE.sub(r"\1import scaler_jupyter.\2 as \2", source)


def extract_tests(repo: str, tag: str, into: Path) -> None:
    """Copy ``tests/`` of ``tag`` out of the git directory ``repo`` into ``into``."""
    archive = subprocess.run(["git", "-C", repo, "archive", tag, "tests"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


@dataclass(slots=True)
class Outcome:
    """Pass count of one suite on one implementation, and the tests that did not pass."""

    passed: int = 0
    total: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # test id -> first line of its error
    ids: list[str] = field(default_factory=list)  # every test id of the report
    skipped: int = 0  # not in total (Citi's abstract base classes, GraphBLAS when it is not installed)


def run_pytest(python: str, directory: Path, keyword: str | None) -> Outcome:
    """Run pytest in ``directory`` (so its ``tests`` package is the one imported) and read its JUnit report."""
    report = directory / "report.xml"
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
           f"--junitxml={report}", "tests"]
    if keyword:
        cmd += ["-k", keyword]
    subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=1800)
    outcome = Outcome()
    if not report.exists():
        outcome.failed["<collection>"] = "pytest wrote no report"
        return outcome
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome.ids.append(test_id)
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if case.find("skipped") is not None:
            outcome.skipped += 1
            continue
        outcome.total += 1
        if problem is None:
            outcome.passed += 1
        else:
            # the error itself: the last line starting with "E " in the traceback, else pytest's message
            lines = [line[1:].strip() for line in (problem.text or "").splitlines() if line.startswith("E ")]
            message = lines[-1] if lines else (problem.get("message") or "failed")
            outcome.failed[test_id] = message[:200]
    return outcome


def run_suite(name: str, repo: str, tag: str, ours: str, citi: str | None, keyword: str | None):
    """Run one suite on ours (imports mapped) and, if given a Python for it, on Citi's packages."""
    with tempfile.TemporaryDirectory(prefix=f"citi-{name}-") as tmp:
        ours_dir, citi_dir = Path(tmp, "ours"), Path(tmp, "citi")
        for directory in (ours_dir, citi_dir):
            directory.mkdir()
            extract_tests(repo, tag, directory)
        for path in ours_dir.rglob("*.py"):
            path.write_text(map_imports(path.read_text()))
        on_ours = run_pytest(ours, ours_dir, keyword)
        on_citi = run_pytest(citi, citi_dir, keyword) if citi else None
    if on_citi is not None:
        _count_uncollected(on_ours, on_citi)
    return on_ours, on_citi


def _count_uncollected(on_ours: Outcome, on_citi: Outcome) -> None:
    """A module that does not import on ours is one error in its report: count each of its tests instead."""
    for error_id in [test_id for test_id in on_ours.failed if test_id.startswith("::")]:
        module = error_id.removeprefix("::")
        tests = [test_id for test_id in on_citi.ids if test_id.startswith((module + ".", module + "::"))]
        if tests:
            why = on_ours.failed.pop(error_id)
            on_ours.total += len(tests) - 1
            on_ours.failed.update({test_id: f"not collected: {why}" for test_id in tests})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parfun-repo", default=SUITES["parfun"][0])
    parser.add_argument("--pargraph-repo", default=SUITES["pargraph"][0])
    parser.add_argument("--citi-python", default=None, help="a Python with parfun==7.2.2 and pargraph==0.9.6")
    parser.add_argument("--suite", choices=sorted(SUITES), action="append", help="default: both")
    parser.add_argument("-k", dest="keyword", default=None)
    args = parser.parse_args()
    repos = {"parfun": args.parfun_repo, "pargraph": args.pargraph_repo}
    rows = []
    for name in args.suite or sorted(SUITES):
        on_ours, on_citi = run_suite(name, repos[name], SUITES[name][1], sys.executable, args.citi_python, args.keyword)
        rows.append((name, on_ours, on_citi))

    print("tests passed / run (skipped ones are not run: Citi's abstract base classes, GraphBLAS if not installed)")
    print(f"{'suite':<10} {'tag':<8} {'on ours':>18} {'on Citi':>18}")
    for name, on_ours, on_citi in rows:
        cells = [f"{o.passed}/{o.total} ({o.skipped} skipped)" if o else "n/a" for o in (on_ours, on_citi)]
        print(f"{name:<10} {SUITES[name][1]:<8} {cells[0]:>18} {cells[1]:>18}")
    for name, on_ours, on_citi in rows:
        for test_id, why in on_ours.failed.items():
            also = " (fails on Citi's too)" if on_citi and test_id in on_citi.failed else ""
            print(f"  not passing on ours: {name} {test_id}{also}\n      {why}")
        if on_citi:
            for test_id, why in on_citi.failed.items():
                print(f"  not passing on Citi's: {name} {test_id}\n      {why}")


if __name__ == "__main__":
    main()
