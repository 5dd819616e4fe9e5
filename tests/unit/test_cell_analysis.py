"""The names a ``%%scaler`` cell reads and binds, found statically: no kernel, no cluster."""

from __future__ import annotations

import textwrap

import pytest

from scaler_jupyter.jupyter.cell_analysis import analyze


def names(source: str):
    """(reads, binds) of a cell, as sets."""
    result = analyze(textwrap.dedent(source))
    return set(result.reads), set(result.binds)


def reads(source: str) -> set[str]:
    return names(source)[0]


def binds(source: str) -> set[str]:
    return names(source)[1]


# -- straight-line code -------------------------------------------------------------


def test_a_name_assigned_before_use_is_not_read():
    assert names("x = 1\ny = x + z") == ({"z"}, {"x", "y"})


def test_a_name_used_before_it_is_assigned_is_read():
    assert names("y = x\nx = 2") == ({"x"}, {"x", "y"})


def test_assignment_evaluates_the_value_before_binding():
    assert reads("x = x + 1") == {"x"}


def test_augmented_assignment_reads_then_binds():
    assert names("total += step") == ({"total", "step"}, {"total"})
    assert reads("total = 0\ntotal += 1") == set()


def test_tuple_starred_and_chained_targets():
    assert names("a, (b, *c) = d = pair") == ({"pair"}, {"a", "b", "c", "d"})


def test_attribute_and_subscript_targets_read_their_objects():
    assert names("obj.attr = 1\ntable[key] = value") == ({"obj", "table", "key", "value"}, set())


def test_annotated_assignment():
    assert names("x: int = y") == ({"int", "y"}, {"x"})
    assert names("x: int") == ({"int"}, set())


def test_builtins_are_reads_the_notebook_resolves():
    # the analysis does not know builtins; the magic ships only names the namespace has
    assert reads("print(len(items))") == {"print", "len", "items"}


# -- imports ------------------------------------------------------------------------


def test_imports_bind_their_top_name_or_alias():
    assert names("import os.path\nimport numpy as np\nfrom math import pi, tau as t") == (
        set(), {"os", "np", "pi", "t"})


def test_a_name_imported_first_is_not_read():
    assert reads("import math\nr = math.sqrt(n)") == {"n"}


def test_star_import_is_flagged():
    result = analyze("from math import *\nr = sqrt(2)")
    assert result.star_import
    assert set(result.reads) == {"sqrt"}


# -- del ----------------------------------------------------------------------------


def test_del_reads_and_unbinds():
    result = analyze("del x")
    assert result.reads == ("x",) and result.deletes == ("x",)
    assert reads("x = 1\ndel x\ny = x") == {"x"}


def test_a_name_bound_again_after_del_is_not_deleted():
    result = analyze("del x\nx = 2")
    assert result.deletes == () and "x" in result.binds


def test_del_of_items_reads_the_container():
    assert analyze("del table[key]").reads == ("table", "key")


# -- functions, classes, lambdas ------------------------------------------------------


def test_function_body_reads_module_names_at_definition():
    assert names("""
        def f(a, b=default):
            local = a + b
            return local + scale
    """) == ({"default", "scale"}, {"f"})


def test_function_body_names_bound_before_the_def_are_not_read():
    assert reads("""
        scale = 2
        def f(a):
            return a * scale
        y = f(3)
    """) == set()


def test_function_parameters_and_locals_are_not_read():
    assert reads("""
        def f(a, *args, k=1, **kw):
            for i in args:
                a += i
            return a, kw, k
    """) == set()


def test_decorators_defaults_and_annotations_are_read_where_defined():
    assert reads("""
        @decorate(option)
        def f(a: Kind = fallback, *, b: Other = None) -> Result:
            return a
    """) == {"decorate", "option", "Kind", "fallback", "Other", "Result"}


def test_global_in_a_function_binds_a_module_name():
    result = analyze(textwrap.dedent("""
        def bump():
            global counter
            counter = counter + 1
        bump()
    """))
    assert "counter" in result.binds
    assert "counter" in result.reads  # it reads the old value too


def test_nested_functions_and_closures():
    assert reads("""
        def outer(x):
            y = x
            def inner():
                nonlocal y
                return y + z
            return inner
    """) == {"z"}


def test_recursion_and_later_functions_are_over_approximated_as_reads():
    # a function may run after names it uses are bound: shipping them is harmless
    assert reads("""
        def main():
            return helper()
        def helper():
            return 1
        main()
    """) == {"helper"}


def test_class_bodies_and_methods():
    assert names("""
        class Model(Base, metaclass=Meta):
            size = default_size
            def fit(self, data):
                return train(self, data, size_limit)
    """) == ({"Base", "Meta", "default_size", "train", "size_limit"}, {"Model"})


def test_class_attributes_are_not_cell_names():
    assert binds("class C:\n    x = 1") == {"C"}


def test_lambda_reads_its_free_names_and_defaults():
    assert names("f = lambda a, b=init: a + b + offset") == ({"init", "offset"}, {"f"})


def test_async_function():
    assert names("async def fetch(url):\n    return await client.get(url)") == ({"client"}, {"fetch"})


# -- comprehensions and walrus ---------------------------------------------------------


def test_comprehension_variables_are_local():
    assert names("squares = [i * i for i in range(n) if i % k]") == ({"range", "n", "k"}, {"squares"})


def test_nested_comprehensions_and_dict_set_generator_forms():
    assert reads("""
        grid = [[x * y for y in cols] for x in rows]
        lookup = {key: val for key, val in pairs}
        unique = {w for w in words}
        total = sum(v for v in values)
    """) == {"cols", "rows", "pairs", "words", "sum", "values"}


def test_later_iterables_see_earlier_comprehension_variables():
    assert reads("pairs = [(a, b) for a in left for b in table[a]]") == {"left", "table"}


def test_walrus_binds_in_the_cell_even_inside_a_comprehension():
    assert names("found = [y for x in data if (y := f(x))]\nlast = y") == ({"data", "f"}, {"found", "y", "last"})
    assert names("if (n := len(items)) > 3:\n    big = n") == ({"len", "items"}, {"n", "big"})


# -- control flow ----------------------------------------------------------------------


def test_names_bound_in_both_branches_are_bound_after_if():
    assert reads("""
        if flag:
            x = 1
        else:
            x = 2
        y = x
    """) == {"flag"}


def test_a_name_bound_in_one_branch_only_is_read_after_it():
    assert reads("""
        if flag:
            x = 1
        y = x
    """) == {"flag", "x"}


def test_loop_bodies_may_not_run():
    assert names("""
        for item in items:
            last = item
        print(last)
    """) == ({"items", "print", "last"}, {"item", "last"})


def test_a_name_read_before_it_is_set_in_a_loop_body_is_read():
    assert reads("""
        for i in range(3):
            if i:
                print(total)
            total = i
    """) == {"range", "print", "total"}


def test_while_loop_and_else():
    assert reads("""
        while pending():
            step = 1
        else:
            done = step
    """) == {"pending", "step"}


def test_try_except_else_finally():
    result = analyze(textwrap.dedent("""
        try:
            value = compute()
        except (ValueError, Custom) as error:
            value = None
            message = str(error)
        else:
            message = "ok"
        finally:
            cleanup()
        print(value, message)
    """))
    assert set(result.reads) == {"compute", "ValueError", "Custom", "str", "cleanup", "print"}
    assert "error" not in result.binds  # Python unbinds it after the handler
    assert {"value", "message"} <= set(result.binds)


def test_a_name_bound_only_in_try_body_is_read_after_a_handler_that_does_not_bind_it():
    assert "value" in reads("""
        try:
            value = compute()
        except Exception:
            pass
        print(value)
    """)


def test_with_targets():
    assert names("with open(path) as handle, lock:\n    text = handle.read()") == (
        {"open", "path", "lock"}, {"handle", "text"})


def test_match_statement():
    result = analyze(textwrap.dedent("""
        match command:
            case Point(x=px, y=0):
                where = px
            case [first, *rest]:
                where = first
            case {"key": found, **others}:
                where = found
            case LIMIT.value:
                where = None
            case _:
                where = default
    """))
    assert set(result.reads) == {"command", "Point", "LIMIT", "default"}
    assert {"px", "first", "rest", "found", "others", "where"} <= set(result.binds)


def test_fstrings_read_their_expressions():
    assert reads("text = f'{name!r}: {value:{width}.{precision}f}'") == {"name", "value", "width", "precision"}


def test_global_statement_at_top_level_changes_nothing():
    assert names("global x\nx = 1") == (set(), {"x"})


# -- order, the last expression, errors ------------------------------------------------


def test_names_come_in_order_of_first_appearance():
    result = analyze("c = b + a\nd = a + e")
    assert result.reads == ("b", "a", "e")
    assert result.binds == ("c", "d")


def test_the_last_expression_is_displayed_unless_it_ends_with_a_semicolon():
    assert analyze("x = 1\nx").last_expression
    assert not analyze("x = 1\nx;").last_expression
    assert not analyze("x = 1\nx;  # quiet").last_expression
    assert not analyze("x = 1").last_expression
    assert analyze("f(x)  # a comment; not a semicolon").last_expression
    assert not analyze("label = 'é'\nf('ü', label) ;").last_expression  # offsets in bytes, not characters
    assert analyze("x = 1; x").last_expression and not analyze("x; y = 1").last_expression


def test_an_empty_cell():
    result = analyze("\n# nothing but a comment\n")
    assert result.reads == () and result.binds == () and not result.last_expression


def test_ipython_transformed_magics_read_get_ipython():
    # what shell.transform_cell makes of "%time f()" and "!ls"
    assert "get_ipython" in reads("get_ipython().run_line_magic('time', 'f()')\nget_ipython().system('ls')")


def test_syntax_errors_raise_with_the_line():
    with pytest.raises(SyntaxError) as caught:
        analyze("\nx = 1\ny = = 2\n")
    assert caught.value.lineno == 3


@pytest.mark.parametrize("source", ["return 1", "for x in y:\n    pass\nbreak", "nonlocal x", "await f()"])
def test_errors_only_the_compiler_finds_raise_too(source):
    with pytest.raises(SyntaxError):
        analyze(source)


def test_results_are_cached_per_source():
    assert analyze("a = b") is analyze("a = b")
