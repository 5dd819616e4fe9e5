"""Module paths that exist only as aliases: Citi's parfun and pargraph layouts over ours.

A Citi user imports from ``parfun.partition.api`` or ``pargraph.graph.objects``; after changing
``parfun`` to ``scaler_jupyter.parfun`` those paths must still import. Rather than a tree of
files that each re-export a name or two, each library keeps one table (``parfun/citi.py``,
``pargraph/citi.py``) of alias module -> {name: "our.module:attribute"}, and :func:`install`
puts a finder for those tables on ``sys.meta_path``. An alias module holds only references to
our objects, resolved when it is first imported; a module path that prefixes another alias
(``scaler_jupyter.parfun.partition``) is a package, so its children import. Those packages are
imported at install, keeping any name their real parent already binds: Citi's ``pargraph.graph``
is a package, while ``scaler_jupyter.pargraph.graph`` stays the ``@graph`` decorator.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Mapping

AliasTable = Mapping[str, Mapping[str, str]]  # module path -> {name: "module:attribute"}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads the alias modules of the installed tables, and nothing else."""

    def __init__(self) -> None:
        self.tables: dict[str, Mapping[str, str]] = {}

    def add(self, table: AliasTable) -> None:
        for path, names in table.items():
            self.tables[path] = names
            parent = path.rpartition(".")[0]
            while parent and parent not in self.tables and not _is_real(parent):
                self.tables[parent] = {}
                parent = parent.rpartition(".")[0]

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.tables:
            return None
        is_package = any(other.startswith(fullname + ".") for other in self.tables)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=is_package)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = f"Alias module (Citi's layout): names defined elsewhere in {module.__name__.split('.')[1]}."
        if module.__spec__.submodule_search_locations is not None:
            module.__path__ = []
        for name, target in self.tables[module.__name__].items():
            module_name, _, attribute = target.partition(":")
            setattr(module, name, getattr(importlib.import_module(module_name), attribute))


def _is_real(module_name: str) -> bool:
    return module_name in sys.modules and not isinstance(sys.modules[module_name].__spec__.loader, _AliasFinder)


_finder = _AliasFinder()


def install(table: AliasTable) -> None:
    """Make the alias modules of ``table`` importable (idempotent)."""
    _finder.add(table)
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    for path in sorted(path for path, names in _finder.tables.items() if not names):
        parent_name, _, name = path.rpartition(".")
        parent = sys.modules.get(parent_name)
        if path in sys.modules or parent is None or not hasattr(parent, name):
            continue
        bound = getattr(parent, name)
        importlib.import_module(path)
        setattr(parent, name, bound)  # the import bound the package there: the real name wins
