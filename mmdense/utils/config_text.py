"""Read plain values out of config text without executing it.

A checkpoint stores its training config as Python text (mmengine's ``meta.cfg``, and
``meta.config`` in some checkpoints). Executing that text (``Config.fromstring``,
``Config.fromfile``) runs whatever code it holds, so a downloaded checkpoint could run code just
by being exported or embedded. The text mmengine writes (``Config.pretty_text``) is a list of
assignments whose values are literals and ``dict(...)`` calls; :func:`read_assignments` parses
it with :mod:`ast` (which never executes anything) and evaluates only those forms. A value in any
other form (a name, an attribute, another call, an operator) raises
:class:`NonLiteralConfigError` naming its line.
"""
import ast
from typing import Any, Dict, Iterable

_UNARY = {ast.UAdd: lambda v: +v, ast.USub: lambda v: -v}


class NonLiteralConfigError(ValueError):
    """Config text whose value is not a literal (so reading it would need executing it)."""


def _literal(node: ast.AST) -> Any:
    """The value of a literal node; ``dict(k=v, ...)`` counts as a literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool,
                                                                   type(None))):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_literal(element) for element in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(key): _literal(value) for key, value in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict'
            and not node.args and all(k.arg is not None for k in node.keywords)):
        return {keyword.arg: _literal(keyword.value) for keyword in node.keywords}
    if (isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, (int, float))):
        return _UNARY[type(node.op)](node.operand.value)
    raise NonLiteralConfigError(f'line {getattr(node, "lineno", "?")}: '
                                f'{ast.dump(node)[:80]} is not a literal')


def read_assignments(text: str, names: Iterable[str]) -> Dict[str, Any]:
    """The literal values of the top-level assignments ``name = ...`` of ``names`` in ``text``.

    Statements of other kinds, and assignments to other names, are skipped (never run). A name
    assigned twice keeps its last value, as executing the text would. Raises ``SyntaxError`` for
    text that is not Python and :class:`NonLiteralConfigError` when a wanted value is not a
    literal.
    """
    wanted, values = set(names), {}
    for node in ast.parse(text, mode='exec').body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in wanted):
            values[node.targets[0].id] = _literal(node.value)
    return values
