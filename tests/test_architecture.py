"""The package's dependency rule (docs/DEVELOPING.md, "Dependency rule"), checked on the source with ``ast``.

Every module of ``pecmae_hub`` belongs to one layer; an import (module level or inside a function,
absolute ``pecmae_hub.`` or relative, or ``importlib.import_module("pecmae_hub...")`` with a literal
name) is an edge from the importing module's layer to the imported module's layer. An edge that the
rule does not allow fails the test, which lists every offending ``file:line -> module``.

Layers (bottom to top):

- ``leaf``: ``errors``, ``audio``, ``configuration``, ``serialization``, ``sampling``; they import only
  each other, and ``errors`` imports nothing of the package;
- ``models``: ``models/*``: leaves only;
- ``hub``: models + leaves;  ``pipeline``: hub + models + leaves;
- ``convert``, ``data``: models + hub + leaves;  ``training``: the same + ``data``;
- ``recipes``: everything except ``cli``;  ``cli``: everything;
- ``api`` (``pecmae_hub/__init__.py``, the lazy public facade): leaves + models + pipeline (+ hub);
  only recipes, cli and ``__main__`` may import it;
- ``main`` (``pecmae_hub/__main__.py``): may import ``cli``.

Nothing in ``pecmae_hub`` imports ``space`` (the Gradio app).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "pecmae_hub"

#: leaf modules and leaf subpackages (``storage``, ``sampling``): they import only each other
LEAF_MODULES = frozenset(
    {
        "errors",
        "audio",
        "audio_stream",
        "configuration",
        "devices",
        "extras",
        "loudness",
        "storage",
        "sampling",
        "distributed",
        "dataset_source",
    }
)
SUBPACKAGE_LAYERS = frozenset({"models", "hub", "convert", "training", "data", "recipes", "app", "cli"})

_LIBRARY = {"leaf", "models", "hub", "pipeline", "convert", "training", "data", "recipes"}
#: layer -> the layers it may import (its own included)
ALLOWED: dict[str, frozenset[str]] = {
    "leaf": frozenset({"leaf"}),
    "models": frozenset({"leaf", "models"}),
    "hub": frozenset({"leaf", "models", "hub"}),
    "pipeline": frozenset({"leaf", "models", "hub", "pipeline"}),
    "convert": frozenset({"leaf", "models", "hub", "convert"}),
    "data": frozenset({"leaf", "models", "hub", "data"}),
    "training": frozenset({"leaf", "models", "hub", "data", "training"}),
    "recipes": frozenset(_LIBRARY | {"api"}),
    "app": frozenset(_LIBRARY | {"api", "app"}),
    "cli": frozenset(_LIBRARY | {"api", "app", "cli"}),
    "api": frozenset({"leaf", "models", "hub", "pipeline", "api"}),
    "main": frozenset(_LIBRARY | {"api", "app", "cli", "main"}),
}
#: the bottom of the leaves: imports nothing of the package
LEAF_ROOT = f"{PACKAGE}.errors"


def layer_of(module: str) -> str | None:
    """Layer of a dotted module name; ``"space"`` for the app, None when unclassified."""
    parts = module.split(".")
    if parts[0] == "space":
        return "space"
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return "api"
    head = parts[1]
    if head == "__main__":
        return "main"
    if head in LEAF_MODULES:
        return "leaf"
    if head in ("pipeline", "prediction", "prototype_audio", "render_index", "batch", "fidelity", "model_fidelity"):
        return "pipeline"
    if head in SUBPACKAGE_LAYERS:
        return head
    return None


#: (importing module, imported module) allowed against the layer rule; each documented in docs/DEVELOPING.md
EXCEPTIONS = frozenset({("pecmae_hub.models.autoencoder", "pecmae_hub.convert.upstream")})


def allowed(src_module: str, dst_module: str) -> bool:
    """True when the rule lets ``src_module`` import ``dst_module``."""
    if (src_module, dst_module) in EXCEPTIONS:
        return True
    src, dst = layer_of(src_module), layer_of(dst_module)
    if src is None or dst is None:
        return False
    if src_module == LEAF_ROOT and dst_module != LEAF_ROOT:
        return False
    return dst in ALLOWED.get(src, frozenset())


# ---- reading the source ------------------------------------------------------------------------
@dataclass(frozen=True)
class Edge:
    file: str  # path relative to the scanned root
    line: int
    src: str  # importing module
    dst: str  # imported module

    def __str__(self) -> str:
        src, dst = layer_of(self.src) or "unclassified", layer_of(self.dst) or "unclassified"
        return f"{self.file}:{self.line} -> {self.dst} ({src} -> {dst})"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file, for every ``.py`` file under ``root/package``."""
    return {module_name(p, root): p for p in sorted((root / package).rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve_relative(src: str, is_package: bool, level: int, module: str | None) -> str:
    base = src.split(".") if is_package else src.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _literal_import_call(node: ast.Call) -> str | None:
    """``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")`` with a literal name."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def imports_of(path: Path, src: str, known: set[str], is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, wherever it is (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(src, is_package, node.level, node.module)
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                # ``from pkg import submodule`` imports the submodule; ``from mod import name`` imports mod
                found.append((node.lineno, candidate if candidate in known else base))
        elif isinstance(node, ast.Call):
            target = _literal_import_call(node)
            if target:
                found.append((node.lineno, target))
    return list(dict.fromkeys(found))  # one entry per (line, module)


def package_edges(root: Path = REPO, package: str = PACKAGE) -> list[Edge]:
    """Every import edge from a module of ``package`` to ``package`` itself or to ``space``."""
    modules = package_modules(root, package)
    known = set(modules)
    edges = []
    for src, path in modules.items():
        rel = str(path.relative_to(root))
        for line, dst in imports_of(path, src, known, path.name == "__init__.py"):
            top = dst.split(".")[0]
            if top in (package, "space"):
                edges.append(Edge(rel, line, src, dst))
    return edges


def forbidden(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges if not allowed(e.src, e.dst)]


def _report(bad: list[Edge]) -> str:
    return "forbidden imports (see docs/DEVELOPING.md, 'Dependency rule'):\n" + "\n".join(f"  {e}" for e in bad)


# ---- the rule on the real package ----------------------------------------------------------------
def test_every_module_has_a_layer():
    unclassified = [name for name in package_modules(REPO) if layer_of(name) is None]
    assert not unclassified, f"modules outside every layer (add them to tests/test_architecture.py): {unclassified}"


def test_dependency_rule():
    edges = package_edges()
    assert edges, "no pecmae_hub imports found: the scan is broken"
    bad = forbidden(edges)
    assert not bad, _report(bad)


def test_argparse_only_in_cli():
    offenders = []
    for name, path in package_modules(REPO).items():
        if layer_of(name) == "cli":
            continue
        for line, dst in imports_of(path, name, set(), path.name == "__init__.py"):
            if dst.split(".")[0] == "argparse":
                offenders.append(f"{path.relative_to(REPO)}:{line} -> {dst}")
    assert not offenders, "argparse belongs to pecmae_hub/cli only:\n" + "\n".join(offenders)


# ---- the checker can fail ------------------------------------------------------------------------
def test_checker_catches_forbidden_edges(tmp_path):
    files = {
        "pecmae_hub/__init__.py": "",
        "pecmae_hub/errors.py": "from . import audio\n",  # errors imports nothing of the package
        "pecmae_hub/audio.py": "from pecmae_hub.errors import AudioError\n",  # allowed
        "pecmae_hub/pipeline.py": "from pecmae_hub.hub import registry\n",  # allowed
        "pecmae_hub/models/__init__.py": "",
        "pecmae_hub/models/head.py": textwrap.dedent("""\
            from ..sampling import x           # allowed: a leaf
            from . import transformer          # allowed: same layer
            def f():
                from pecmae_hub.pipeline import PECMAE   # models -> pipeline
                return PECMAE
            """),
        "pecmae_hub/models/transformer.py": "import importlib\nm = importlib.import_module('pecmae_hub.hub.files')\n",
        "pecmae_hub/hub/__init__.py": "",
        "pecmae_hub/hub/registry.py": "import space.app_ui\n",  # nothing in the package imports space
        "pecmae_hub/hub/files.py": "from pecmae_hub import pipeline\n",  # hub -> pipeline
        "pecmae_hub/convert/__init__.py": "",
        "pecmae_hub/convert/head.py": "from ..training.features import load\nfrom pecmae_hub.models import head\n",
        "pecmae_hub/training/__init__.py": "",
        "pecmae_hub/training/features.py": "from pecmae_hub.data.splits import s\nfrom pecmae_hub.cli import main\n",
        "pecmae_hub/sampling.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    bad = {(e.file, e.line, e.dst) for e in forbidden(package_edges(tmp_path))}
    assert bad == {
        ("pecmae_hub/errors.py", 1, "pecmae_hub.audio"),
        ("pecmae_hub/models/head.py", 4, "pecmae_hub.pipeline"),
        ("pecmae_hub/models/transformer.py", 2, "pecmae_hub.hub.files"),
        ("pecmae_hub/hub/registry.py", 1, "space.app_ui"),
        ("pecmae_hub/hub/files.py", 1, "pecmae_hub.pipeline"),
        ("pecmae_hub/convert/head.py", 1, "pecmae_hub.training.features"),
        ("pecmae_hub/training/features.py", 2, "pecmae_hub.cli"),
    }
    assert "pecmae_hub/models/head.py:4 -> pecmae_hub.pipeline (models -> pipeline)" in _report(
        forbidden(package_edges(tmp_path))
    )


def test_layer_table():
    assert layer_of("pecmae_hub.sampling") == "leaf" and layer_of("pecmae_hub.models.head") == "models"
    assert layer_of("pecmae_hub") == "api" and layer_of("pecmae_hub.__main__") == "main"
    assert layer_of("pecmae_hub.nowhere") is None and layer_of("space.app_ui") == "space"
    assert allowed("pecmae_hub.training.head", "pecmae_hub.data.splits")
    assert not allowed("pecmae_hub.data.splits", "pecmae_hub.training.head")
    assert allowed("pecmae_hub.recipes.gm_solos", "pecmae_hub.pipeline")
    assert not allowed("pecmae_hub.recipes.gm_solos", "pecmae_hub.cli.recipe")
    assert allowed("pecmae_hub.cli.convert", "pecmae_hub.convert.head")
    assert not allowed("pecmae_hub.models.head", "pecmae_hub")  # the facade pulls in the pipeline


# ---- building the CLI parser stays light -----------------------------------------------------------
_PROBE = """
import json, sys
from pecmae_hub.cli import build_parser
build_parser()
print(json.dumps({m: m in sys.modules for m in ("torch", "numpy", "sklearn", "gradio", "diffusers", "accelerate")}))
"""

# Which module-level imports of the cli reach torch: torch is made unimportable, each imported module is
# imported on its own, and the attempt to import torch records the pecmae_hub frames on the stack.
_CULPRITS = """
import importlib, json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            chain, frame = [], sys._getframe(1)
            while frame is not None:
                mod = frame.f_globals.get("__name__", "")
                if mod.startswith("pecmae_hub"):
                    chain.append(f"{mod}:{frame.f_lineno}")
                frame = frame.f_back
            raise ImportError(" <- ".join(chain))
        return None
sys.meta_path.insert(0, Block())
out = {}
for where, name in json.loads(sys.argv[1]):
    if name == "torch" or name.startswith("torch."):
        out[where] = "imports torch itself"
        continue
    try:
        importlib.import_module(name)
    except ImportError as exc:
        out[where] = f"{name}: {exc}"
print(json.dumps(out))
"""


def module_level_imports(path: Path, src: str, known: set[str]) -> list[tuple[int, str]]:
    """Imports executed when the module is imported (not those inside functions or classes)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nested = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for n in ast.walk(f)
        if n is not f
    }
    every = imports_of(path, src, known, path.name == "__init__.py")
    top = {n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in nested}
    return [(line, dst) for line, dst in every if line in top]


def cli_module_level_imports() -> list[tuple[str, str]]:
    modules = package_modules(REPO)
    out = []
    for name, path in modules.items():
        if layer_of(name) == "cli" and not name.endswith("__main__"):
            for line, dst in module_level_imports(path, name, set(modules)):
                if dst.split(".")[0] in (PACKAGE, "torch"):
                    out.append((f"{path.relative_to(REPO)}:{line}", dst))
    return out


def _run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_building_the_parser_does_not_import_torch():
    loaded = _run(_PROBE)
    if loaded["torch"]:
        culprits = _run(_CULPRITS, json.dumps(cli_module_level_imports()))
        lines = "\n".join(f"  {where} -> {chain}" for where, chain in culprits.items())
        pytest.fail(
            f"build_parser() imported torch (loaded: {loaded}); module-level imports that reach it "
            f"(import chain, innermost first):\n{lines}"
        )
