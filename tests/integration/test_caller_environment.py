"""Workers import what the caller imports: its ``sys.path`` on its own host, ``register_by_value`` anywhere.

Every module a task needs here is written to a temporary folder that is not the
working directory of the test run or of the cluster, so only the caller's path (or
the module shipped by value) can lead a worker to it.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import textwrap
import uuid

import pytest

pytestmark = pytest.mark.timeout(120)

RESULT_TIMEOUT = 20.0
SCRIPT_TIMEOUT = 90.0


def _unique(prefix: str) -> str:
    """A module name no worker has imported before (workers outlive a test)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _forget(name: str) -> None:
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)


def test_a_module_next_to_a_script_run_from_another_folder(tmp_path):
    """``python ../project/script.py``: the script's folder is on its path, not on the cluster's."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "helpers_next_to_script.py").write_text("def double(x):\n    return 2 * x\n")
    (project / "script.py").write_text(textwrap.dedent("""
        from helpers_next_to_script import double
        from scaler_jupyter import Client

        if __name__ == "__main__":
            with Client() as client:
                print(list(client.map(double, range(5))))
    """))
    done = _run([sys.executable, str(project / "script.py")], cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[0, 2, 4, 6, 8]\n"
    assert done.stderr == ""


def test_a_folder_appended_to_sys_path_after_the_cluster_started(client, tmp_path):
    assert client.submit(len, "abc").result(RESULT_TIMEOUT) == 3  # the path of the first task had no such folder
    name = _unique("appended_later")
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / f"{name}.py").write_text("def square(x):\n    return x * x\n")
    sys.path.append(str(folder))
    try:
        module = importlib.import_module(name)
        assert client.submit(module.square, 7).result(RESULT_TIMEOUT) == 49
        assert list(client.map(module.square, range(4), timeout=RESULT_TIMEOUT)) == [0, 1, 4, 9]
    finally:
        sys.path.remove(str(folder))
        _forget(name)


def test_a_graph_imports_from_the_caller_path_too(client, tmp_path):
    name = _unique("graph_helpers")
    (tmp_path / f"{name}.py").write_text("def inc(x):\n    return x + 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)
        dsk = {"a": 1, "b": (module.inc, "a"), "c": (module.inc, "b")}
        assert client.get(dsk, "c", timeout=RESULT_TIMEOUT) == 3
    finally:
        sys.path.remove(str(tmp_path))
        _forget(name)


def test_a_module_under_a_pytest_rootdir_that_is_not_the_working_directory(tmp_path):
    """pytest puts the test's folder on ``sys.path`` (its rootdir-based import); the tests' own functions then
    travel by reference, and the workers must find them."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "tests").mkdir(parents=True)
    elsewhere.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "tests" / "test_on_workers.py").write_text(textwrap.dedent("""
        from scaler_jupyter import Client


        def cube(x):
            return x ** 3


        def test_cubes_on_workers():
            with Client() as client:
                assert list(client.map(cube, range(4), timeout=60)) == [0, 1, 8, 27]
    """))
    done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(project),
                 str(project / "tests" / "test_on_workers.py")], cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def _load_from_file(name: str, package_folder) -> object:
    """Import a package from a folder that is on no ``sys.path``, as a notebook's importlib tricks do."""
    spec = importlib.util.spec_from_file_location(name, package_folder / "__init__.py",
                                                  submodule_search_locations=[str(package_folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_a_module_no_worker_can_import_fails_naming_it_and_register_by_value_ships_it(client, tmp_path):
    name = _unique("shipped")
    package = tmp_path / "nowhere_on_a_path" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .inner import scale\n")
    (package / "inner.py").write_text("FACTOR = 3\n\ndef scale(x):\n    return FACTOR * x\n")
    try:
        module = _load_from_file(name, package)
        with pytest.raises(ModuleNotFoundError) as info:
            client.submit(module.scale, 2).result(RESULT_TIMEOUT)
        assert info.value.name == name
        assert f"client.register_by_value({name})" in str(info.value)

        client.register_by_value(module)
        assert client.submit(module.scale, 2).result(RESULT_TIMEOUT) == 6

        def import_inside(x):  # travels by value (defined here); imports the shipped package on the worker
            inner = importlib.import_module(f"{name}.inner")
            return inner.scale(x), inner.__file__

        assert client.submit(import_inside, 5).result(RESULT_TIMEOUT) == (15, str(package / "inner.py"))

        # edited and registered again: the workers run the new code
        (package / "inner.py").write_text("FACTOR = 10\n\ndef scale(x):\n    return FACTOR * x\n")
        client.register_by_value(module)
        assert client.submit(import_inside, 5).result(RESULT_TIMEOUT)[0] == 50
    finally:
        _forget(name)


def test_tasks_a_task_submits_get_the_modules_shipped_to_it(client, tmp_path):
    name = _unique("shipped_nested")
    package = tmp_path / "nowhere_on_a_path" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def negate(x):\n    return -x\n")
    try:
        module = _load_from_file(name, package)
        client.register_by_value(module)

        def parent(x):  # on a worker: a client of its own, whose task needs the shipped package too
            from scaler_jupyter import Client

            with Client() as inner:
                return inner.submit(importlib.import_module(name).negate, x).result(60)

        assert client.submit(parent, 4).result(RESULT_TIMEOUT * 2) == -4
    finally:
        _forget(name)


def test_register_by_value_refuses_what_has_no_python_source(client):
    with pytest.raises(TypeError, match="takes a module"):
        client.register_by_value("os")
    with pytest.raises(ValueError, match="no Python source"):
        client.register_by_value(sys)
