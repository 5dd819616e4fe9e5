"""The import environment's rules, without processes: which path a processor takes, what a bundle holds and
how it is served, and what a client sends when."""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from scaler_jupyter.import_environment import (
    BundleFinder,
    CallerEnvironment,
    ImportPath,
    bundle_module,
    capture_import_path,
    host_identity,
    interpreter_identity,
)

CALLER = ImportPath(host="laptop", interpreter="/usr/py/cpython-311", prefixes=("/usr/py",),
                    entries=("/home/me/project", "/usr/py/lib/python3.11", "/usr/py/lib/site-packages", "/shared"))
OWN = ["/srv/cwd", "/usr/py/lib/python3.11", "/usr/py/lib/site-packages"]


def test_on_the_caller_s_host_with_its_interpreter_the_processor_takes_the_caller_s_path_then_its_own():
    assert CALLER.for_processor(OWN, "laptop", "/usr/py/cpython-311") == [*CALLER.entries, "/srv/cwd"]


def test_with_another_interpreter_only_the_caller_s_own_folders_come_first():
    assert CALLER.for_processor(OWN, "laptop", "/opt/other/cpython-312") == ["/home/me/project", "/shared", *OWN]


def test_on_another_host_the_processor_keeps_its_own_path():
    assert CALLER.for_processor(OWN, "server", "/usr/py/cpython-311") == OWN


def test_a_captured_path_is_absolute_and_names_this_host_and_interpreter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", "relative", *sys.path])
    captured = capture_import_path()
    assert captured.entries[:2] == (str(tmp_path), str(tmp_path / "relative"))
    assert captured.host == host_identity() and captured.interpreter == interpreter_identity()
    # another interpreter takes the user's folders, never this one's installation
    taken = captured.for_processor([], captured.host, "another")
    assert taken[:2] == [str(tmp_path), str(tmp_path / "relative")]
    assert not any("site-packages" in entry for entry in taken)


def _package(root, name: str) -> None:
    (root / name / "sub").mkdir(parents=True)
    (root / name / "__init__.py").write_text("VALUE = 1\n")
    (root / name / "sub" / "__init__.py").write_text("")
    (root / name / "sub" / "leaf.py").write_text("def where():\n    return __name__\n")
    (root / name / "__pycache__").mkdir()
    (root / name / "__pycache__" / "stale.py").write_text("raise RuntimeError('never shipped')\n")


def test_a_bundle_holds_every_python_file_of_a_package_by_module_name(tmp_path, monkeypatch):
    _package(tmp_path, "bundled_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        bundle = bundle_module(importlib.import_module("bundled_pkg"))
    finally:
        sys.modules.pop("bundled_pkg", None)
    assert bundle.name == "bundled_pkg"
    assert sorted(bundle.modules) == ["bundled_pkg", "bundled_pkg.sub", "bundled_pkg.sub.leaf"]
    filename, source, is_package = bundle.modules["bundled_pkg.sub"]
    assert source == b""
    assert is_package and filename == str(tmp_path / "bundled_pkg" / "sub" / "__init__.py")
    assert bundle.modules["bundled_pkg"][1] == b"VALUE = 1\n"


def test_only_modules_with_python_source_can_be_bundled():
    with pytest.raises(ValueError, match="no Python source"):
        bundle_module(sys)
    with pytest.raises(TypeError, match="takes a module"):
        bundle_module("json")
    with pytest.raises(ValueError, match="by value already"):
        bundle_module(sys.modules["__main__"])


@pytest.fixture
def finder():
    finder = BundleFinder()
    sys.meta_path.insert(0, finder)
    yield finder
    sys.meta_path.remove(finder)
    for name in [m for m in sys.modules if m.startswith("served_pkg")]:
        del sys.modules[name]


def test_the_finder_serves_bundles_and_reloads_one_whose_content_changed(tmp_path, finder, monkeypatch):
    _package(tmp_path, "served_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = bundle_module(importlib.import_module("served_pkg"))
    for name in [m for m in sys.modules if m.startswith("served_pkg")]:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    sys.path.remove(str(tmp_path))  # from here on, only the finder knows the package
    importlib.invalidate_caches()
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("served_pkg")

    installed = types.ModuleType("served_pkg")  # a copy of its own the process imported before
    sys.modules["served_pkg"] = installed
    finder.use([first])
    assert importlib.import_module("served_pkg") is not installed, "the shipped code must win"
    leaf = importlib.import_module("served_pkg.sub.leaf")
    assert leaf.where() == "served_pkg.sub.leaf" and leaf.__file__.endswith("leaf.py")
    assert importlib.import_module("served_pkg").VALUE == 1

    (tmp_path / "served_pkg" / "__init__.py").write_text("VALUE = 2\n")
    sys.path.insert(0, str(tmp_path))
    second = bundle_module(sys.modules["served_pkg"])
    sys.path.remove(str(tmp_path))
    finder.use([first])  # the same content: nothing is unloaded
    assert "served_pkg.sub.leaf" in sys.modules
    finder.use([second])
    assert "served_pkg.sub.leaf" not in sys.modules
    assert importlib.import_module("served_pkg").VALUE == 2


def test_a_client_stores_its_environment_again_only_when_sys_path_or_its_modules_change(monkeypatch, tmp_path):
    stored: list[object] = []

    def put(obj) -> bytes:
        stored.append(obj)
        return b"id%d" % len(stored)

    environment = CallerEnvironment(put)
    monkeypatch.setattr(sys, "path", list(sys.path))
    ids = environment.ids()
    assert environment.ids() is ids and len(stored) == 1 and isinstance(stored[0], ImportPath)
    sys.path.append(str(tmp_path))
    assert environment.ids() == [b"id2"] and stored[1].entries[-1] == str(tmp_path)

    module = types.ModuleType("shipped_here")
    module.__file__ = str(tmp_path / "shipped_here.py")
    (tmp_path / "shipped_here.py").write_text("X = 1\n")
    environment.register_by_value(module)
    assert environment.ids() == [b"id4", b"id3"]  # the path again, then the bundle
    assert environment.ids() == [b"id4", b"id3"] and len(stored) == 4
