"""What a task needs to import what its caller imports: the caller's ``sys.path``, and modules shipped by value.

A client describes its import environment as a few objects, stored on the scheduler
the way functions are (content-addressed, sent once) and named by every task it
submits (``TaskSpec.environment``). A processor applies them before it loads the
task. While ``sys.path`` and the registered modules stay as they are, a task carries
the same one or two 16-byte ids, and the client pays one list comparison per task.

- :class:`ImportPath` is the caller's ``sys.path`` (relative entries made absolute
  against its working directory), with the host and the interpreter it belongs to.
  A path names files on one machine only, so a processor applies it by
  :meth:`ImportPath.for_processor`:

  * on the caller's host, with the caller's interpreter (a local cluster always
    is): the caller's entries, in its order, then the processor's own entries the
    caller lacks; what ``ProcessPoolExecutor``'s children get;
  * on the caller's host, with another interpreter: only the caller's entries
    outside its installation (its own folders, never its site-packages, built for
    another Python), then the processor's own;
  * on another host: the processor's own path, untouched. A folder of the
    caller's means nothing there, or worse, other files. Modules reach such
    workers by value (:meth:`CallerEnvironment.register_by_value`), or installed.

- :class:`ModuleBundle` is the source of a module or package, by module name. A
  processor serves the bundles of its current task from :class:`BundleFinder`,
  first on ``sys.meta_path``, so a shipped module wins over any other copy; a
  bundle whose content changed (the caller edited and registered it again) is
  unloaded, and its next import runs the new code. A ``Client`` made inside a task
  ships the bundles its task was given on to its own tasks (nested tasks import
  what their parent could).
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.util
import os
import site
import socket
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path


@dataclasses.dataclass(slots=True, frozen=True)
class ImportPath:
    """A caller's ``sys.path``, and where it holds: see the module docstring."""

    host: str  # host_identity() of the caller
    interpreter: str  # interpreter_identity() of the caller
    prefixes: tuple[str, ...]  # the caller's installation: entries under these are its Python's, not its own
    entries: tuple[str, ...]

    def for_processor(self, own: list[str], host: str, interpreter: str) -> list[str]:
        """The ``sys.path`` a processor whose own path is ``own`` runs this caller's tasks with."""
        if host != self.host:
            return list(own)
        if interpreter == self.interpreter:
            first = list(self.entries)
        else:
            first = [e for e in self.entries if not any(_under(e, p) for p in self.prefixes)]
        known = set(first)
        return first + [e for e in own if e not in known]


@dataclasses.dataclass(slots=True, frozen=True)
class ModuleBundle:
    """The source files of one module or package, to import it where it is not installed."""

    name: str
    modules: dict[str, tuple[str, bytes, bool]]  # module name -> (the caller's file name, source, is a package)


def host_identity() -> str:
    """This machine, as the files a path names see it: the host name, its boot, and the root filesystem
    (two containers on one kernel share a boot id, not a root)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            boot_id = boot.read().strip()
    except OSError:
        boot_id = ""
    root = os.stat("/")
    return f"{socket.gethostname()}/{boot_id}/{root.st_dev}:{root.st_ino}"


def interpreter_identity() -> str:
    """This Python installation: its prefix and version (which site-packages it can use)."""
    return f"{os.path.realpath(sys.prefix)}/{sys.implementation.cache_tag}"


def capture_import_path() -> ImportPath:
    """The current ``sys.path`` of this process as an :class:`ImportPath`."""
    cwd = os.getcwd()
    entries = tuple(dict.fromkeys(e if os.path.isabs(e) else os.path.abspath(os.path.join(cwd, e))
                                  for e in sys.path if isinstance(e, str)))
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    prefixes.update(os.path.realpath(p) for p in getattr(site, "getsitepackages", list)())  # not in old virtualenvs
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        prefixes.add(os.path.realpath(site.getusersitepackages()))
    return ImportPath(host_identity(), interpreter_identity(), tuple(sorted(prefixes)), entries)


def bundle_module(module: types.ModuleType) -> ModuleBundle:
    """Read the source of ``module`` (every ``.py`` file of a package) into a :class:`ModuleBundle`."""
    if not isinstance(module, types.ModuleType):
        raise TypeError(f"register_by_value takes a module, not {type(module).__name__}: import it first")
    name = module.__name__
    if name == "__main__":
        raise ValueError("the functions and classes of __main__ (a script, a notebook) travel by value already: "
                         "register_by_value is for the modules they import")
    locations = list(getattr(module, "__path__", None) or ())
    modules: dict[str, tuple[str, bytes, bool]] = {}
    if locations:  # a package, perhaps a namespace package spread over several folders
        for location in locations:
            root = Path(location)
            for file in sorted(root.rglob("*.py")):
                if "__pycache__" in file.parts:
                    continue
                parts = file.relative_to(root).with_suffix("").parts
                is_package = parts[-1] == "__init__"
                dotted = ".".join((name, *parts[:-1])) if is_package else ".".join((name, *parts))
                modules.setdefault(dotted, (str(file), file.read_bytes(), is_package))
    else:
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py"):
            raise ValueError(f"module {name!r} has no Python source file ({file or 'built in'}): only modules "
                             "written in Python can be shipped by value; install it on the workers instead")
        modules[name] = (file, Path(file).read_bytes(), False)
    if not modules:
        raise ValueError(f"package {name!r} has no Python source file under {locations}")
    return ModuleBundle(name, modules)


def _under(entry: str, prefix: str) -> bool:
    real = os.path.realpath(entry)
    return real == prefix or real.startswith(prefix.rstrip(os.sep) + os.sep)


class CallerEnvironment:
    """A client's side: the ids of its environment objects, stored through ``put`` (which returns an object's
    id) only when ``sys.path``, the registered modules or (in a processor) the task's bundles change."""

    def __init__(self, put: Callable[[object], bytes]) -> None:
        self._put = put
        self._lock = threading.Lock()
        self._path: list[str] | None = None  # sys.path as it was when the ids were made
        self._inherited: dict | None = None  # the bundles this process's finder served then
        self._bundles: dict[str, bytes] = {}  # module name -> the id of its bundle
        self._ids: list[bytes] = []

    def ids(self) -> list[bytes]:
        """The object ids every task submitted now names. The list is shared: never modify it."""
        if sys.path != self._path or _served() is not self._inherited:
            with self._lock:
                path, inherited = list(sys.path), _served()
                if path != self._path or inherited is not self._inherited:
                    bundles = [self._put(b) for name, b in (inherited or {}).items() if name not in self._bundles]
                    self._ids = [self._put(capture_import_path()), *self._bundles.values(), *bundles]
                    self._path, self._inherited = path, inherited
        return self._ids

    def register_by_value(self, module: types.ModuleType) -> None:
        """Ship ``module``'s source with every task submitted from now on, replacing an earlier registration."""
        bundle_id = self._put(bundle_module(module))
        with self._lock:
            self._bundles[module.__name__] = bundle_id
            self._path = None  # the next task recomputes the ids


class _BundleLoader(importlib.abc.SourceLoader):
    """Loads one module of a bundle from its source, under the caller's file name (for tracebacks)."""

    def __init__(self, filename: str, source: bytes, is_package: bool) -> None:
        self._filename, self._source, self._is_package = filename, source, is_package

    def get_filename(self, fullname: str) -> str:
        return self._filename

    def get_data(self, path: str) -> bytes:
        if path == self._filename:
            return self._source
        raise OSError(f"{path} is not part of a module shipped by value")

    def is_package(self, fullname: str) -> bool:
        return self._is_package


def _served() -> dict | None:
    """The bundles this process serves (by module name), if it is a processor; a new dict when they change."""
    return None if _finder is None else _finder.bundles


class BundleFinder(importlib.abc.MetaPathFinder):
    """Serves the modules of the bundles in use; :meth:`install` puts it first on ``sys.meta_path``."""

    def __init__(self) -> None:
        self.bundles: dict[str, ModuleBundle] = {}  # replaced, never modified: clients here compare it by identity
        self._modules: dict[str, tuple[str, bytes, bool]] = {}
        self._served: dict[str, ModuleBundle] = {}  # by module name: the bundle its loaded modules may come from

    def install(self) -> BundleFinder:
        """Serve this process's imports first; clients made in this process ship its bundles on."""
        global _finder
        sys.meta_path.insert(0, self)
        _finder = self
        return self

    def use(self, bundles: list[ModuleBundle]) -> None:
        """Serve ``bundles`` (and nothing else). What was imported under a bundle's name from anywhere else (an
        installed copy, an earlier version of the bundle) is unloaded, so that the shipped code runs."""
        wanted = {bundle.name: bundle for bundle in bundles}
        for name, bundle in wanted.items():
            served = self._served.get(name)
            if served is None or served.modules != bundle.modules:
                for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                    del sys.modules[loaded]
                self._served[name] = bundle
        self.bundles = wanted
        self._modules = {}
        for bundle in bundles:
            self._modules.update(bundle.modules)

    def find_spec(self, fullname: str, path=None, target=None):
        entry = self._modules.get(fullname)
        if entry is None:
            return None
        filename, source, is_package = entry
        return importlib.util.spec_from_file_location(
            fullname, filename, loader=_BundleLoader(filename, source, is_package),
            submodule_search_locations=[] if is_package else None)


_finder: BundleFinder | None = None  # this process's, once a processor installed it
