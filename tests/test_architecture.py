"""Layer rules of the library, checked by parsing every module's imports (ast).

The layers (docs/architecture.md): data / validation / io -> models ->
inference -> diagnostics, sbc, study, experiments -> cli. Every ``import``
counts, also the lazy ones inside functions: a lazy import is still a
dependency. The checker is run once on the real tree and once on a small
tree written here with a deliberately bad import, which it must reject.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# where each import namespace lives on disk (pyproject's package-dir)
PACKAGE_DIRS = {"psm_bayes": "psm_bayes", "psm_bayes.models": "models", "psm_bayes.inference": "inference"}
MAX_LINES = 500
# modules that the model layer may import besides itself: data containers and validators
MODEL_MAY_IMPORT = ("psm_bayes.data", "psm_bayes.validation", "psm_bayes.models")
INFERENCE_MAY_IMPORT_FROM_MODELS = ("psm_bayes.models.base",)
# inside experiments: measurement stages, analysis and output; a sub-package imports none of those listed
EXPERIMENT_SUBLAYERS = {
    "psm_bayes.experiments.measure": ("psm_bayes.experiments.analysis", "psm_bayes.experiments.output"),
    "psm_bayes.experiments.analysis": ("psm_bayes.experiments.output",),
}
# module-level import cycles allowed, each with its reason (every other cycle between modules fails)
ALLOWED_MODULE_CYCLES = [
    # SBCResult.save() is a convenience method that imports sbc.store lazily; store builds SBCResult on load
    ["psm_bayes.sbc.plots", "psm_bayes.sbc.result", "psm_bayes.sbc.store"],
]


def library_modules(root: Path) -> dict[str, Path]:
    """Module name -> file for every library module under ``root``."""
    out = {}
    for package, folder in PACKAGE_DIRS.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            # psm_bayes/ must not hold a folder named like a mapped package
            if package == "psm_bayes" and parts and parts[0] in ("models", "inference"):
                raise AssertionError(f"{path}: psm_bayes/{parts[0]} would shadow the mapped package")
            out[name] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of the psm_bayes modules imported anywhere in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m == "psm_bayes" or m.startswith("psm_bayes.")}


def resolve(imported: set[str], modules: dict[str, Path]) -> set[str]:
    """Map ``from pkg import name`` entries onto real modules (drop names that are attributes)."""
    return {m for m in imported if m in modules}


def layer(module: str) -> str:
    """The node of the package graph a module belongs to (``psm_bayes.<first part>``)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def violations(root: Path) -> list[str]:
    """Every broken layer rule under ``root``, one line each."""
    modules = library_modules(root)
    graph: dict[str, set[str]] = {m: resolve(imports_of(m, p), modules) for m, p in modules.items()}
    bad = []
    for mod, deps in graph.items():
        node = layer(mod)
        lines = len(modules[mod].read_text().splitlines())
        if lines > MAX_LINES:
            bad.append(f"{mod}: {lines} lines (at most {MAX_LINES})")
        for dep in sorted(deps):
            if node == "psm_bayes.models" and not dep.startswith(MODEL_MAY_IMPORT):
                bad.append(f"{mod} imports {dep}: models import only data/validation modules and models")
            if (node == "psm_bayes.inference" and dep.startswith("psm_bayes.models")
                    and dep not in INFERENCE_MAY_IMPORT_FROM_MODELS):
                bad.append(f"{mod} imports {dep}: inference imports only the model-spec module from models")
            if node == "psm_bayes.llm" and dep.startswith(("psm_bayes.models", "psm_bayes.experiments")):
                bad.append(f"{mod} imports {dep}: llm imports neither models nor experiments")
            if node != "psm_bayes.cli" and dep.startswith("psm_bayes.cli"):
                bad.append(f"{mod} imports {dep}: only the CLI imports the CLI")
            for sub, banned in EXPERIMENT_SUBLAYERS.items():
                if (mod == sub or mod.startswith(sub + ".")) and dep.startswith(banned):
                    bad.append(f"{mod} imports {dep}: measurement stages import neither analysis nor output, "
                               "analysis imports no output")
    # cycles between packages (strongly connected components of the package graph)
    pkg_graph: dict[str, set[str]] = defaultdict(set)
    for mod, deps in graph.items():
        for dep in deps:
            if layer(dep) != layer(mod):
                pkg_graph[layer(mod)].add(layer(dep))
    for cycle in _cycles(pkg_graph):
        bad.append("package cycle between " + ", ".join(cycle))
    # cycles between modules (lazy imports count), e.g. a fits <-> refits circle inside one package
    for cycle in _cycles(graph):
        if cycle not in ALLOWED_MODULE_CYCLES:
            bad.append("module cycle between " + ", ".join(cycle))
    return bad


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_library_follows_layer_rules():
    assert violations(ROOT) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


GOOD_TREE = {
    "psm_bayes/__init__.py": "",
    "psm_bayes/data.py": "import numpy\n",
    "psm_bayes/cli/__init__.py": "from psm_bayes.inference import fit\n",
    "psm_bayes/llm/__init__.py": "",
    "psm_bayes/experiments/__init__.py": "from psm_bayes.llm import scorer\n",
    "psm_bayes/experiments/measure/__init__.py": "",
    "psm_bayes/experiments/measure/icl.py": "",
    "psm_bayes/experiments/analysis/__init__.py": "",
    "psm_bayes/experiments/analysis/fits.py": "",
    "psm_bayes/experiments/analysis/refits.py": "from psm_bayes.experiments.analysis import fits\n",
    "psm_bayes/experiments/output/__init__.py": "",
    "psm_bayes/experiments/output/report.py": "from psm_bayes.experiments.analysis import fits\n",
    "psm_bayes/llm/scorer.py": "def f():\n    import torch\n",
    "models/__init__.py": "",
    "models/base.py": "",
    "models/m.py": "from psm_bayes.data import X\nfrom psm_bayes.models import base\n",
    "inference/__init__.py": "from psm_bayes.models.base import spec_of\n",
}


@pytest.mark.parametrize("bad_file, bad_line, expected", [
    ("models/m.py", "def g():\n    from psm_bayes.inference import fit_nuts\n", "models import only"),
    ("inference/__init__.py", "from psm_bayes.models.m import model\n", "only the model-spec module"),
    ("psm_bayes/llm/scorer.py", "from psm_bayes.experiments import run\n", "llm imports neither"),
    ("psm_bayes/llm/scorer.py", "from ..cli import main\n", "only the CLI imports the CLI"),
    ("psm_bayes/data.py", "from psm_bayes.llm import scorer\n", "package cycle"),
    ("psm_bayes/experiments/measure/icl.py", "from psm_bayes.experiments.analysis import fits\n",
     "measurement stages import neither"),
    ("psm_bayes/experiments/analysis/fits.py", "def f():\n    from psm_bayes.experiments.output import report\n",
     "analysis imports no output"),
    ("psm_bayes/experiments/analysis/fits.py", "def f():\n    from psm_bayes.experiments.analysis import refits\n",
     "module cycle"),
])
def test_checker_rejects_a_deliberately_bad_import(tmp_path, bad_file, bad_line, expected):
    """The rule test can fail: the same checker flags each bad import added to a clean tree."""
    _write(tmp_path, GOOD_TREE)
    assert violations(tmp_path) == []
    if expected == "package cycle":  # data -> llm and llm -> data
        _write(tmp_path, {"psm_bayes/llm/scorer.py": "from psm_bayes.data import X\n"})
    path = tmp_path / bad_file
    path.write_text(path.read_text() + bad_line)
    found = violations(tmp_path)
    assert any(expected in line for line in found), found


def test_checker_rejects_a_long_module(tmp_path):
    _write(tmp_path, GOOD_TREE)
    (tmp_path / "psm_bayes/data.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert any("lines (at most" in line for line in violations(tmp_path))
