"""The search's shape, read from its source with ``ast``: no function in ``effnet/search/`` takes more than
MAX_PARAMETERS parameters (what travels together is one object: the runner's context, the coefficients, the
study's settings), and nothing there reaches into an object's private attributes (Optuna's ``study._storage``,
``trial._trial_id``: the runner holds the storage it opened and asks it through its public methods)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

SEARCH_DIR = Path(importlib.util.find_spec("effnet").origin).parent / "search"
MAX_PARAMETERS = 6
OWN = ("self", "cls")  # an object's own private attributes are its business


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> int:
    """Every parameter: positional-only, positional, keyword-only, *args and **kwargs; ``self``/``cls`` excluded."""
    a = node.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    if names and names[0] in OWN and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        names = names[1:]
    return len(names)


def too_many_parameters(source: str, filename: str = "<snippet>") -> list[str]:
    """``file:line name (n)`` for every function, method, nested function or lambda over the limit."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            n = parameter_count(node)
            if n > MAX_PARAMETERS:
                out.append(f"{filename}:{node.lineno} {getattr(node, 'name', 'lambda')} ({n} parameters)")
    return out


def private_attributes(source: str, filename: str = "<snippet>") -> list[str]:
    """``file:line expr._name`` for every attribute named ``_x`` (not a ``__dunder__``) read or written on anything
    but ``self``/``cls``: ``study._storage``, ``trial._trial_id``, ``storage._backend`` ..."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Attribute):
            continue
        if not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in OWN:
            continue
        out.append(f"{filename}:{node.lineno} {ast.unparse(node)}")
    return out


def search_sources() -> dict[str, str]:
    return {str(p.relative_to(SEARCH_DIR.parent.parent)): p.read_text() for p in sorted(SEARCH_DIR.rglob("*.py"))}


def test_the_checks_can_fail():
    snippet = '''
def wide(a, b, c, d, e, f, g): ...
def fine(self, a, b, c, d, e, f): ...
def star(a, *args, b, c, d, e, **kwargs): ...
class K:
    def method(self, a, b, c, d, e, f, g):
        def inner(a, b, c, d, e, f, g, h): ...
f = lambda a, b, c, d, e, f, g: 0
def peek(study, trial):
    study._storage.set_trial_state_values(trial._trial_id, 1)
    self._ok, cls._ok2, x.__class__, x.public = 1, 2, 3, 4
'''
    wide = too_many_parameters(snippet)
    assert sorted(w.split()[1] for w in wide) == ["inner", "lambda", "method", "star", "wide"], wide
    private = private_attributes(snippet)
    assert sorted(p.split(" ", 1)[1] for p in private) == ["study._storage", "trial._trial_id"], private


def test_sources_are_found():
    sources = search_sources()
    assert any(name.endswith("search/grid.py") for name in sources)
    assert any("search/runner/" in name for name in sources)  # the runner is walked too
    assert sum("def " in text for text in sources.values()) > 10


def test_no_search_function_takes_more_than_six_parameters():
    offenders = [w for name, text in search_sources().items() for w in too_many_parameters(text, name)]
    assert not offenders, offenders


def test_no_private_attribute_is_used():
    offenders = [p for name, text in search_sources().items() for p in private_attributes(text, name)]
    assert not offenders, offenders
