"""What a notebook cell reads from the namespace and what it leaves there: static analysis, no I/O.

``%%scaler`` runs a cell on a worker, so before sending it we must know which of
the notebook's names the cell needs (those it reads before assigning them) and
which names to bring back (those it assigns). :func:`analyze` answers from the
cell's source, after IPython's own transforms, without running anything.

The model, one pass over the cell's top-level statements in execution order:

- ``assigned``: the names *definitely* bound at this point of the cell. A name
  read while it is not in ``assigned`` is a *read* of the cell: its value comes
  from the notebook. Branches (``if``, ``try``, ``match``) keep only what every
  way through binds; a loop body may run zero times, so nothing it binds stays.
- ``bound``: every name the cell may bind at top level (assignments, imports,
  ``def``, ``class``, ``for`` and ``with`` targets, walrus, ``global`` in a
  function it defines); these come back to the notebook. ``except ... as e``
  and comprehension variables are not: Python unbinds or scopes them.
- ``del x`` reads ``x`` (it must exist) and unbinds it; ``x += 1`` reads, then binds.
- Nested scopes (function and class bodies, lambdas) are analysed by Python's own
  :mod:`symtable`: the module-level names they refer to are reads at the point of
  the definition unless already bound there. A function may run later, after
  names it uses are bound, so this over-approximates: a shipped name the cell
  rebinds first costs bytes, never a wrong result. Comprehensions scope their
  own variables; their first iterable is evaluated in the cell's scope.

Names are reported in order of first appearance, so messages and transfers are
deterministic. Results are cached per source: the same cell run again costs a
dictionary look-up.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import symtable

__all__ = ["CellAnalysis", "analyze"]


@dataclasses.dataclass(frozen=True, slots=True)
class CellAnalysis:
    """What :func:`analyze` finds in one cell."""

    reads: tuple[str, ...]  # names the cell reads before it binds them: they come from the notebook
    binds: tuple[str, ...]  # names the cell may bind at top level: they go back to the notebook
    deletes: tuple[str, ...]  # names a top-level ``del`` unbinds and nothing binds again afterwards
    star_import: bool  # ``from m import *``: the names it binds are unknown here
    last_expression: bool  # the cell ends with an expression whose value a notebook displays


@functools.lru_cache(maxsize=256)
def analyze(source: str) -> CellAnalysis:
    """Analyse ``source`` (a cell after ``shell.transform_cell``); raise ``SyntaxError`` if it is not Python."""
    tree = ast.parse(source)
    compile(tree, "<cell>", "exec", dont_inherit=True)  # what only the compiler rejects: return outside a def, ...
    flow = _Flow()
    flow.statements(tree.body)
    deletes = tuple(name for name in flow.deleted if name not in flow.assigned)
    last = bool(tree.body) and isinstance(tree.body[-1], ast.Expr) and not _quieted(source, tree.body[-1])
    return CellAnalysis(tuple(flow.reads), tuple(flow.bound), deletes, flow.star_import, last)


def _quieted(source: str, last: ast.Expr) -> bool:
    """True if a ``;`` follows the last expression: the notebook convention to show no value."""
    line = source.splitlines()[last.end_lineno - 1]
    return line.encode()[last.end_col_offset:].decode().lstrip().startswith(";")  # offsets count UTF-8 bytes


class _Flow:
    """The walk described in the module docstring."""

    def __init__(self) -> None:
        self.assigned: set[str] = set()
        self.reads: dict[str, None] = {}  # ordered sets
        self.bound: dict[str, None] = {}
        self.deleted: dict[str, None] = {}
        self.star_import = False

    # -- names -----------------------------------------------------------------

    def read(self, name: str, local: frozenset[str] = frozenset()) -> None:
        if name not in self.assigned and name not in local:
            self.reads.setdefault(name)

    def bind(self, name: str) -> None:
        self.assigned.add(name)
        self.bound.setdefault(name)
        self.deleted.pop(name, None)

    def bind_target(self, target: ast.expr) -> None:
        """Bind the names of an assignment target; the parts of ``a[i].b`` targets are reads."""
        if isinstance(target, ast.Name):
            self.bind(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.bind_target(element)
        elif isinstance(target, ast.Starred):
            self.bind_target(target.value)
        else:  # Attribute, Subscript: evaluated, then stored into
            self.expression(target)

    # -- statements ------------------------------------------------------------

    def statements(self, body: list[ast.stmt]) -> None:
        for statement in body:
            self.statement(statement)

    def branch(self, body: list[ast.stmt], start: set[str]) -> set[str]:
        """Walk ``body`` from the bound set ``start``; return the bound set at its end."""
        self.assigned = set(start)
        self.statements(body)
        return self.assigned

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            self.expression(node.value)
            for target in node.targets:
                self.bind_target(target)
        elif isinstance(node, ast.AugAssign):
            if isinstance(node.target, ast.Name):
                self.read(node.target.id)
            self.expression(node.value)
            self.bind_target(node.target)
        elif isinstance(node, ast.AnnAssign):
            self.expression(node.annotation)
            if node.value is not None:
                self.expression(node.value)
                self.bind_target(node.target)
            elif not isinstance(node.target, ast.Name):
                self.expression(node.target)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self.delete(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                self.bind(alias.asname or alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    self.star_import = True
                else:
                    self.bind(alias.asname or alias.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.expressions(node.decorator_list)
            self.arguments(node.args)
            if node.returns is not None:
                self.expression(node.returns)
            self.nested_scope(_undecorated(node))
            self.bind(node.name)
        elif isinstance(node, ast.ClassDef):
            self.expressions(node.decorator_list)
            self.expressions(node.bases)
            self.expressions([keyword.value for keyword in node.keywords])
            self.nested_scope(_undecorated(node))
            self.bind(node.name)
        elif isinstance(node, ast.If):
            self.expression(node.test)
            start = self.assigned
            self.assigned = self.branch(node.body, start) & self.branch(node.orelse, start)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.expression(node.iter)
            start = set(self.assigned)
            self.assigned = set(start)
            self.bind_target(node.target)
            self.statements(node.body)
            self.branch(node.orelse, start)
            self.assigned = start  # the body may never run
        elif isinstance(node, ast.While):
            self.expression(node.test)
            start = set(self.assigned)
            self.branch(node.body, start)
            self.branch(node.orelse, start)
            self.assigned = start
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            self.try_statement(node)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expression(item.context_expr)
                if item.optional_vars is not None:
                    self.bind_target(item.optional_vars)
            self.statements(node.body)
        elif isinstance(node, ast.Match):
            self.expression(node.subject)
            start = set(self.assigned)
            for case in node.cases:
                self.assigned = set(start)
                self.pattern(case.pattern)
                if case.guard is not None:
                    self.expression(case.guard)
                self.statements(case.body)
            self.assigned = start  # no case may match
        elif isinstance(node, (ast.Global, ast.Nonlocal, ast.Pass, ast.Break, ast.Continue)):
            pass  # ``global`` at top level changes nothing
        else:  # Expr, Return, Raise, Assert and statements of newer Pythons: their expressions, in order
            self.expressions([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)])

    def try_statement(self, node: ast.Try) -> None:
        start = set(self.assigned)
        ends = [self.branch(node.body, start)]
        ends[0] = self.branch(node.orelse, ends[0])
        for handler in node.handlers:  # an exception may come before anything of the body ran
            self.assigned = set(start)
            if handler.type is not None:
                self.expression(handler.type)
            if handler.name is not None:
                self.assigned.add(handler.name)
            self.statements(handler.body)
            self.assigned.discard(handler.name)  # Python deletes it at the end of the handler
            ends.append(self.assigned)
        after = set.intersection(*ends)
        if node.finalbody:
            after |= self.branch(node.finalbody, start)
        self.assigned = after

    def delete(self, target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.read(target.id)
            self.assigned.discard(target.id)
            self.deleted.setdefault(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                self.delete(element)
        else:
            self.expression(target)

    def pattern(self, pattern: ast.pattern) -> None:
        """Bind the capture names of a ``case`` pattern; its values and classes are reads."""
        for node in ast.walk(pattern):
            if isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name is not None:
                self.bind(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest is not None:
                self.bind(node.rest)
            elif isinstance(node, ast.MatchValue):
                self.expression(node.value)
            elif isinstance(node, ast.MatchClass):
                self.expression(node.cls)
            elif isinstance(node, ast.MatchMapping):
                self.expressions(node.keys)

    # -- expressions -----------------------------------------------------------

    def expressions(self, nodes, local: frozenset[str] = frozenset()) -> None:
        for node in nodes:
            if node is not None:
                self.expression(node, local)

    def expression(self, node: ast.AST, local: frozenset[str] = frozenset()) -> None:
        """Record the reads of ``node``, evaluated at the cell's top level (``local``: comprehension variables)."""
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                self.read(node.id, local)
        elif isinstance(node, ast.NamedExpr):  # binds in the cell's scope, even inside a comprehension
            self.expression(node.value, local)
            self.bind(node.target.id)
        elif isinstance(node, ast.Lambda):
            self.arguments(node.args, local)
            self.nested_scope(node, local)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            self.comprehension(node, local)
        else:
            for child in ast.iter_child_nodes(node):
                self.expression(child, local)

    def comprehension(self, node, local: frozenset[str]) -> None:
        generators = node.generators
        self.expression(generators[0].iter, local)  # the first iterable is evaluated outside
        inner = set(local)
        for index, generator in enumerate(generators):
            if index:
                self.expression(generator.iter, frozenset(inner))
            inner.update(_target_names(generator.target))
            self.expressions(generator.ifs, frozenset(inner))
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        self.expressions(parts, frozenset(inner))

    def arguments(self, args: ast.arguments, local: frozenset[str] = frozenset()) -> None:
        """Defaults and annotations are evaluated where the function is defined."""
        self.expressions([*args.defaults, *args.kw_defaults], local)
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None and arg.annotation is not None:
                self.expression(arg.annotation, local)

    def nested_scope(self, node: ast.AST, local: frozenset[str] = frozenset()) -> None:
        """The module-level names a function, lambda or class body uses are reads here; those a
        function declares ``global`` and assigns are bound by the cell (if it runs)."""
        uses, assigns = _scope_globals(ast.unparse(node))
        for name in uses:
            self.read(name, local)
        for name in assigns:
            self.bound.setdefault(name)


def _undecorated(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> ast.AST:
    """``node`` without what is evaluated where it is defined (decorators, defaults), walked separately."""
    clone = copy.copy(node)
    clone.decorator_list = []
    if not isinstance(node, ast.ClassDef):
        args = node.args
        clone.args = ast.arguments(posonlyargs=args.posonlyargs, args=args.args, vararg=args.vararg,
                                   kwonlyargs=args.kwonlyargs, kw_defaults=[None] * len(args.kwonlyargs),
                                   kwarg=args.kwarg, defaults=[])
    return clone


def _target_names(target: ast.expr) -> list[str]:
    return [node.id for node in ast.walk(target) if isinstance(node, ast.Name)]


@functools.lru_cache(maxsize=1024)
def _scope_globals(source: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """For the one definition in ``source``: the global names its scopes (and theirs) refer to, and
    those they declare ``global`` and assign. Python's compiler decides, through :mod:`symtable`."""
    table = symtable.symtable(source, "<cell>", "exec").get_children()[0]
    uses: dict[str, None] = {}
    assigns: dict[str, None] = {}
    pending = [table]
    while pending:
        scope = pending.pop()
        for symbol in scope.get_symbols():
            if symbol.is_global():
                if symbol.is_referenced():
                    uses.setdefault(symbol.get_name())
                if symbol.is_declared_global() and symbol.is_assigned():
                    assigns.setdefault(symbol.get_name())
        pending.extend(reversed(scope.get_children()))
    return tuple(uses), tuple(assigns)
