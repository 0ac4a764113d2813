"""The layer rule: which package may import which, read from the table in
docs/ARCHITECTURE.md ("The layer rule"), so the document and this test cannot drift.

Every import that cbx/**.py, setup_env.py and cleanup.py write is checked, lazy ones
inside functions and `importlib.import_module("a.literal")` included. Python's own
import of a submodule's parent package is not an import the code wrote, so it makes no
cycle; it does run that package's `__init__`, so it counts for the standard-library
layer. The synthetic trees at the end show that each rule can fail.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = Path("docs") / "ARCHITECTURE.md"
SCRIPTS = ("setup_env.py", "cleanup.py")
STDLIB_LAYER = "standard-library layer"


@dataclass(frozen=True)
class Import:
    path: str        # relative to the tree's root, e.g. "cbx/ui/view.py"
    line: int
    importer: str    # dotted module name
    imported: str    # the module named: a submodule where one is named, else the package
    lazy: bool       # inside a function: runs on call, not on import


@dataclass(frozen=True)
class Violation:
    where: str       # "path:line"
    importer: str
    imported: str
    rule: str


def module_files(root: Path) -> dict[str, str]:
    """Dotted name -> path of every module checked: cbx/**.py and the setup scripts."""
    files = [p.relative_to(root) for p in sorted((root / "cbx").rglob("*.py"))]
    files += [Path(s) for s in SCRIPTS if (root / s).is_file()]
    names = {}
    for rel in files:
        parts = rel.with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = rel.as_posix()
    return names


def package_of(module: str, modules: dict[str, str]) -> str:
    """The package a module's relative imports start from (a script is its own)."""
    return module if modules[module].endswith("__init__.py") else module.rpartition(".")[0]


def folder_of(path: str) -> str:
    """The table's name for where a file lives: its folder ("cbx/ui/"), or the script."""
    return path.rpartition("/")[0] + "/" if "/" in path else path


def written_imports(root: Path, modules: dict[str, str]) -> list[Import]:
    """Every import each module writes, resolved to the module it names."""
    found = []
    for importer, rel in modules.items():
        tree = ast.parse((root / rel).read_text(encoding="utf-8"), rel)
        for node, lazy in _walk(tree, lazy=False):
            for target in _targets(node, package_of(importer, modules), modules):
                found.append(Import(rel, node.lineno, importer, target, lazy))
    return found


def _walk(node: ast.AST, lazy: bool):
    for child in ast.iter_child_nodes(node):
        yield child, lazy
        yield from _walk(child, lazy or isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _targets(node: ast.AST, package: str, modules: dict[str, str]) -> list[str]:
    """The modules an import statement or import_module("literal") call names:
    `from a import b` names a.b when that is a module, else a (b is an attribute)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = package.rsplit(".", node.level - 1)[0]
            base = f"{anchor}.{base}" if base else anchor
        return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names]
    if (isinstance(node, ast.Call) and node.args
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def read_rule_table(doc: str) -> dict[str, tuple[set[str], bool]]:
    """The doc's layer-rule table: importer (a folder or a file) -> (the folders and
    scripts it may import, whether it is held to the standard-library layer)."""
    section = doc.split("## The layer rule", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        allowed = set(re.findall(r"`([\w./]+)`", cells[1]))
        for importer in re.findall(r"`([\w./]+)`", cells[0]):
            rows[importer] = (allowed, STDLIB_LAYER in cells[1])
    assert rows, f"no rule table under '## The layer rule' in {DOC}"
    return rows


def row_for(path: str, rows: dict) -> str | None:
    """The most specific row: the file's own, else its nearest folder's."""
    keys = [k for k in rows if path == k or k.endswith("/") and path.startswith(k)]
    return max(keys, key=len, default=None)


def stdlib_layer(imports: list[Import], modules: dict[str, str]) -> dict[str, str]:
    """Module -> why it is NOT in the standard-library layer (absent when it is): a layer
    module's imports that run at import time are the standard library or the layer,
    and so is its package's __init__, which importing it runs first."""
    why_not = {}
    changed = True
    while changed:
        changed = False
        for imp in imports:
            if imp.importer in why_not or imp.lazy:
                continue
            if imp.imported in modules:
                reason = (f"{imp.path}:{imp.line} imports {imp.imported}"
                          if imp.imported in why_not else None)
            elif imp.imported.split(".")[0] not in sys.stdlib_module_names:
                reason = f"{imp.path}:{imp.line} imports {imp.imported}"
            else:
                reason = None
            if reason:
                why_not[imp.importer] = reason
                changed = True
        for module in modules:
            parent = module.rpartition(".")[0]
            if module not in why_not and parent in why_not:
                why_not[module] = f"its package {parent} is not"
                changed = True
    return why_not


def shortest_paths(start: str, edges: dict[str, set[str]]) -> dict[str, list[str]]:
    """Every module that start reaches through imports -> the shortest path to it."""
    paths = {start: [start]}
    queue = [start]
    for node in queue:
        for nxt in sorted(edges.get(node, ())):
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return paths


def cycles(imports: list[Import], modules: dict[str, str]) -> list[tuple[Import, list]]:
    """One written import per cycle (per group of modules that reach each other): the
    one that closes the shortest loop, with that loop. Fixing it shows the next."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.imported in modules:
            edges.setdefault(imp.importer, set()).add(imp.imported)
    paths = {module: shortest_paths(module, edges) for module in modules}
    closing: dict[frozenset, tuple[Import, list]] = {}
    for imp in imports:
        back = paths.get(imp.imported, {}).get(imp.importer)
        if back is None:
            continue
        loop = [imp.importer, *back]
        group = frozenset(m for m in paths[imp.importer] if imp.importer in paths[m])
        best = closing.get(group)
        if best is None or (len(loop), imp.path, imp.line) < (
                len(best[1]), best[0].path, best[0].line):
            closing[group] = (imp, loop)
    return list(closing.values())


def check(root: Path) -> list[Violation]:
    """Every import in the tree at root that breaks a rule of its docs/ARCHITECTURE.md,
    and every module of cbx/ that document does not name."""
    doc = (root / DOC).read_text(encoding="utf-8")
    rows = read_rule_table(doc)
    modules = module_files(root)
    imports = written_imports(root, modules)
    not_stdlib = stdlib_layer(imports, modules)

    found = []
    for imp in imports:
        def report(rule: str) -> None:
            found.append(Violation(f"{imp.path}:{imp.line}", imp.importer, imp.imported,
                                   rule))
        row = row_for(imp.path, rows)
        allowed, stdlib_only = rows.get(row, (set(), False))
        local = imp.imported in modules
        if local and folder_of(modules[imp.imported]) not in allowed:
            report(f"{row or imp.path} may import only {', '.join(sorted(allowed))}")
        stdlib = imp.imported.split(".")[0] in sys.stdlib_module_names
        if stdlib_only and (imp.imported in not_stdlib or not local and not stdlib):
            reason = not_stdlib.get(imp.imported, "not the standard library")
            report(f"{row} may import only the {STDLIB_LAYER} ({reason})")
    for imp, loop in cycles(imports, modules):
        found.append(Violation(f"{imp.path}:{imp.line}", imp.importer, imp.imported,
                               "import cycle: " + " -> ".join(loop)))
    for module, rel in modules.items():
        names = {rel, rel.removesuffix("__init__.py")}
        if rel.startswith("cbx/") and not any(f"`{name}`" in doc for name in names):
            found.append(Violation(f"{rel}:1", module, "",
                                   f"every module is named in {DOC.as_posix()}"))
    return found


def test_the_real_tree_keeps_the_layer_rule():
    violations = check(REPO)
    assert violations == [], "\n".join(
        f"{v.where}: {v.importer} -> {v.imported}: {v.rule}" for v in violations)


def test_the_doc_lists_the_public_api_of_cbx_init():
    section = (REPO / DOC).read_text(encoding="utf-8").split("## Public API", 1)[1]
    listed = set(re.findall(r"`(\w+)`", section.split("\n## ", 1)[0]))
    tree = ast.parse((REPO / "cbx" / "__init__.py").read_text(encoding="utf-8"))
    exported = next(ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign) and node.targets[0].id == "__all__")
    assert listed == set(exported)


def test_the_doc_table_has_a_row_for_every_folder():
    rows = read_rule_table((REPO / DOC).read_text(encoding="utf-8"))
    folders = {folder_of(path) for path in module_files(REPO).values()}
    assert folders <= set(rows), f"no row for {sorted(folders - set(rows))}"


# --- the checker can fail: one deliberately wrong import per rule ----------------------

SYNTHETIC_DOC = """# map
`cbx/__init__.py` `cbx/facts.py` `cbx/engine/` `cbx/engine/model.py` `cbx/ui/`
`cbx/ui/backend.py` `cbx/ui/view.py` `cbx/ui/session.py` `cbx/dev/` `cbx/dev/bench.py`

## The layer rule

| code in | may import |
|---|---|
| `cbx/` | `cbx/` `cbx/engine/` |
| `cbx/engine/` | `cbx/` `cbx/engine/` |
| `cbx/ui/` | `cbx/` `cbx/ui/` |
| `cbx/ui/backend.py` | `cbx/` `cbx/engine/` `cbx/ui/` |
| `cbx/dev/` | `cbx/` `cbx/engine/` `cbx/ui/` `cbx/dev/` |
| `setup_env.py` `cleanup.py` | `cbx/` `cleanup.py`: the standard-library layer only |

## After
"""

SYNTHETIC_TREE = {
    "cbx/__init__.py": "from . import facts\n\ndef speak():\n    from .engine import model\n",
    "cbx/facts.py": "import json\n",
    "cbx/engine/__init__.py": "",
    "cbx/engine/model.py": "import torch\nfrom cbx import facts\n",
    "cbx/ui/__init__.py": "",
    "cbx/ui/backend.py": "from cbx.engine import model\n",
    "cbx/ui/view.py": "from .session import State\n",
    "cbx/ui/session.py": "import os\n",
    "cbx/dev/__init__.py": "",
    "cbx/dev/bench.py": "import cbx.ui.backend\n",
    "setup_env.py": "import sys\nfrom cbx import facts\nfrom cleanup import main\n",
    "cleanup.py": "import shutil\n\ndef main():\n    from cbx import facts\n",
}


def make_tree(root: Path, changes: dict[str, str]) -> Path:
    for rel, text in {**SYNTHETIC_TREE, **changes}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / DOC).parent.mkdir(exist_ok=True)
    (root / DOC).write_text(SYNTHETIC_DOC, encoding="utf-8")
    return root


def test_a_tree_that_keeps_the_rule_passes(tmp_path):
    assert check(make_tree(tmp_path, {})) == []


@pytest.mark.parametrize("rel, text, where, importer, imported, rule", [
    pytest.param("cbx/facts.py", "import json\n\ndef f():\n    from cbx.dev import bench\n",
                 "cbx/facts.py:4", "cbx.facts", "cbx.dev.bench",
                 "cbx/ may import only cbx/, cbx/engine/", id="runtime imports dev, lazily"),
    pytest.param("cbx/ui/view.py", "from ..engine.model import Model\n",
                 "cbx/ui/view.py:1", "cbx.ui.view", "cbx.engine.model",
                 "cbx/ui/ may import only cbx/, cbx/ui/", id="ui passes its seam"),
    pytest.param("cbx/ui/view.py", "import importlib\n\ndef f():\n"
                 "    return importlib.import_module('cbx.engine')\n",
                 "cbx/ui/view.py:4", "cbx.ui.view", "cbx.engine",
                 "cbx/ui/ may import only cbx/, cbx/ui/", id="ui passes its seam, import_module"),
    pytest.param("cleanup.py", "def main():\n    from cbx.engine import model\n",
                 "cleanup.py:2", "cleanup", "cbx.engine.model",
                 "cleanup.py may import only the standard-library layer "
                 "(cbx/engine/model.py:1 imports torch)", id="setup imports the engine"),
    pytest.param("cbx/facts.py", "import json\nimport numpy\n",
                 "setup_env.py:2", "setup_env", "cbx.facts",
                 "setup_env.py may import only the standard-library layer "
                 "(cbx/facts.py:2 imports numpy)", id="a setup import leaves the stdlib"),
    pytest.param("cbx/__init__.py", "from . import facts\nimport numpy\n",
                 "setup_env.py:2", "setup_env", "cbx.facts",
                 "setup_env.py may import only the standard-library layer "
                 "(its package cbx is not)", id="a package init leaves the stdlib"),
    pytest.param("cbx/ui/session.py", "def seed():\n    from .view import parse\n",
                 "cbx/ui/session.py:2", "cbx.ui.session", "cbx.ui.view",
                 "import cycle: cbx.ui.session -> cbx.ui.view -> cbx.ui.session",
                 id="a lazy import closes a cycle"),
    pytest.param("cbx/ui/extra.py", "import os\n",
                 "cbx/ui/extra.py:1", "cbx.ui.extra", "",
                 "every module is named in docs/ARCHITECTURE.md", id="an unnamed module"),
])
def test_each_rule_reports_a_wrong_import(tmp_path, rel, text, where, importer, imported,
                                          rule):
    found = check(make_tree(tmp_path, {rel: text}))
    assert Violation(where, importer, imported, rule) in found, found
