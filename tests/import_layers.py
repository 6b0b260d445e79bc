"""mmdense's import contract: its packages form layers, and imports point one way.

A module imports only from its own layer or a lower one, and no chain of imports between modules
comes back to where it started. Both rules hold for every import statement, at module level and
inside functions alike (an import moved into a function to dodge a cycle is still the cycle).
:data:`LAYERS` is the one declaration of the order; ``tests/test_utils/test_import_layers.py``
checks the package against it, and the README's "Package layout" section cites it.

Run ``python tests/import_layers.py [PACKAGE_DIR]`` to print the violations (exit status 1 when
there are any).
"""
import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

ROOT = 'mmdense'
# bottom → top; a package listed here holds all its subpackages and modules. The package root
# (``mmdense/__init__.py``: version checks, ``utils.compat`` patches) sits with ``mmdense.utils``.
# ``mmdense.registry`` depends on nothing of mmdense, so it sits at the bottom: that lets
# ``mmdense.utils.register_all_modules`` import the registries whose ``locations`` it imports.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ('mmdense.version', 'mmdense.registry'),
    ('mmdense', 'mmdense.utils'),
    ('mmdense.fileio', ),
    ('mmdense.structures', ),
    ('mmdense.models', ),
    ('mmdense.datasets', ),
    ('mmdense.evaluation', ),
    ('mmdense.engine', ),
    ('mmdense.transfer', ),
    ('mmdense.apis', ),
)


@dataclass(frozen=True)
class Import:
    """One imported mmdense module: ``importer`` imports ``target`` at ``path:line``."""
    importer: str
    target: str
    path: str
    line: int
    in_function: bool


def layer_of(module: str, layers=LAYERS) -> Tuple[int, str]:
    """``(index, name)`` of the layer entry holding ``module``: the longest listed name that is
    ``module`` or a package above it (the root matches itself only); ``KeyError`` when none."""
    best = None
    for index, names in enumerate(layers):
        for name in names:
            holds = module == name or (name != ROOT and module.startswith(name + '.'))
            if holds and (best is None or len(name) > len(best[1])):
                best = (index, name)
    if best is None:
        raise KeyError(module)
    return best


def module_files(package_dir: Path) -> Dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file under ``package_dir`` (a package
    named like its folder; ``__init__.py`` is the package itself)."""
    package_dir = Path(package_dir)
    modules = {}
    for path in sorted(package_dir.rglob('*.py')):
        parts = (package_dir.name, ) + path.relative_to(package_dir).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        modules['.'.join(parts)] = path
    return modules


def _statements(tree: ast.AST, in_function: bool = False) -> Iterator[Tuple[ast.AST, bool]]:
    """Every import statement of ``tree`` with whether it runs inside a function."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _statements(node, inner)


def _known(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """``name`` or the nearest package above it that is a module of ``modules``."""
    while name and name not in modules:
        name = name.rpartition('.')[0]
    return name or None


def imports_of(module: str, path: Path, modules: Dict[str, Path]) -> List[Import]:
    """The mmdense modules that ``module`` (file ``path``) imports, each with its line."""
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    found = []
    for node, in_function in _statements(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ''
            if node.level:
                anchor = package.split('.')
                anchor = anchor[:len(anchor) - node.level + 1]
                base = '.'.join(anchor + ([node.module] if node.module else []))
            # ``from package import name``: the submodule ``name`` when there is one
            names = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base
                     for alias in node.names]
        for name in names:
            if name != ROOT and not name.startswith(ROOT + '.'):
                continue
            target = _known(name, modules)
            item = Import(module, target, str(path), node.lineno, in_function)
            if target is not None and target != module and item not in found:
                found.append(item)
    return found


def _chain(module: str) -> List[str]:
    """``module`` and the packages above it, top first: ``['a', 'a.b', 'a.b.c']``."""
    parts = module.split('.')
    return ['.'.join(parts[:n]) for n in range(1, len(parts) + 1)]


def _executed(item: Import) -> List[str]:
    """The modules an import runs: the target and each package above it that is not already
    running because it holds the importer (importing ``a.b.c`` runs ``a/b/__init__.py``)."""
    running = set(_chain(item.importer))
    return [name for name in _chain(item.target) if name not in running]


def upward_imports(imports: List[Import], layers=LAYERS) -> List[str]:
    """One message per import of a higher layer."""
    messages = []
    for item in imports:
        (low, low_name), (high, high_name) = layer_of(item.importer, layers), layer_of(
            item.target, layers)
        if high > low:
            where = ' (inside a function)' if item.in_function else ''
            messages.append(f'{item.path}:{item.line}: upward import{where}: {item.importer} '
                            f'(layer {low + 1}, {low_name}) imports {item.target} '
                            f'(layer {high + 1}, {high_name})')
    return messages


def import_cycles(imports: List[Import]) -> List[str]:
    """One message per group of modules that import each other in a circle (a strongly
    connected group, Tarjan's algorithm), naming its shortest loop through the group's first
    module edge by edge."""
    graph: Dict[str, Dict[str, Import]] = {}
    for item in imports:
        for executed in _executed(item):
            graph.setdefault(item.importer, {}).setdefault(executed, item)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:  # recursion depth ≤ number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    messages = []
    for group in groups:
        loop = _loop(graph, group)
        steps = '; '.join(f'{graph[a][b].path}:{graph[a][b].line}: {a} imports {b}'
                          for a, b in zip(loop, loop[1:]))
        messages.append(f'import cycle through {len(group)} modules, e.g. '
                        f'{" -> ".join(loop)}: {steps}')
    return messages


def _loop(graph: Dict[str, Dict[str, Import]], group: List[str]) -> List[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    previous = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in graph.get(node, {}):
                if nxt == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if nxt in members and nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f'no loop through {group}')


def check(package_dir: Path, layers=LAYERS) -> List[str]:
    """Every violation of the contract in the package at ``package_dir``: modules no layer
    holds, upward imports, import cycles."""
    modules = module_files(package_dir)
    messages, imports = [], []
    for module, path in modules.items():
        try:
            layer_of(module, layers)
        except KeyError:
            messages.append(f'{path}: {module} is in no layer: add it to LAYERS '
                            f'({Path(__file__).name})')
            continue
        imports += imports_of(module, path, modules)
    imports = [item for item in imports if _in_layers(item.target, layers)]
    return messages + upward_imports(imports, layers) + import_cycles(imports)


def _in_layers(module: str, layers) -> bool:
    try:
        layer_of(module, layers)
    except KeyError:
        return False
    return True


if __name__ == '__main__':
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / ROOT
    violations = check(folder)
    print('\n'.join(violations) or f'{folder}: imports follow the layers, no cycle')
    sys.exit(1 if violations else 0)
