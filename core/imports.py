"""The one reader of a Python file's import statements (by its syntax tree, at any depth of the file).

``submission.build`` uses it to follow the inference core's imports, to check what bundled files import against
the 2022 runtime and to refuse training code in a bundle; ``tests/test_structure.py`` uses it for the import
graph and its layers. Only absolute imports are read (``from . import x`` is left out: the project imports
absolutely). Not shipped in a bundle (``main.py`` never imports it).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass


class ImportReadError(ValueError):
    """A file that cannot be parsed; the message names it and the line."""


@dataclass(frozen=True)
class Import:
    module: str  # "a.b" for ``import a.b`` and for ``from a.b import c``
    names: tuple  # ``from`` imports: the names imported ("c"); () for ``import``
    line: int

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def targets(self) -> list:
        """What the statement may name as modules, most specific first: ``from a import b`` -> a.b, a."""
        return [f"{self.module}.{n}" for n in self.names if n != "*"] + [self.module] if self.names else [self.module]


def read_imports(source: str, filename: str = "<source>") -> list:
    """Every absolute import statement of ``source``, in the order of the syntax tree's walk."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise ImportReadError(f"{filename}: cannot parse: {exc}") from exc
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(Import(node.module, tuple(a.name for a in node.names), node.lineno))
    return found


def core_modules(source: str, filename: str = "<source>") -> set:
    """The ``core`` modules a file imports: ``import core.x``, ``from core.x import ...``, ``from core import x``."""
    found = set()
    for imp in read_imports(source, filename):
        if imp.module == "core":
            found |= set(imp.names) - {"*"}
        elif imp.module.startswith("core."):
            found.add(imp.module.split(".")[1])
    return found


TRAINING = ("accelerate", "core.run", "core.training")


def training_imports(source: str, filename: str = "<source>") -> list:
    """The imports of training-only code (accelerate, the runner, core.training) in ``source``."""
    out = []
    for imp in read_imports(source, filename):
        named = imp.targets() if imp.module == "core" else [imp.module]
        if any(t == p or t.startswith(p + ".") for t in named for p in TRAINING):
            out.append(imp)
    return out
