"""The package's layout rules, checked on the code itself (docs/architecture.md explains them):
imports flow one way between the stages, no module imports another in a circle, and no module or class
outgrows what a reader can hold (about 550 and 350 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

from shared_paths import REPO_ROOT

PACKAGE = REPO_ROOT / "faceid"
# stage -> the stages it may import (besides itself)
MAY_IMPORT = {
    "core": set(),
    "model": {"core"},
    "data": {"core", "model"},
    "eval": {"core", "model"},
    "gallery": {"core", "model"},
    "train": {"core", "model", "data", "eval"},
    "app": {"core", "model", "gallery", "synthetic"},  # synthetic: only its detector_model (see below)
    "synthetic": {"core", "model", "data", "eval", "train"},  # the GAN and the detector sit beside train
}
MAX_MODULE_LINES, MAX_CLASS_LINES = 560, 360


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(REPO_ROOT).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path) -> set[str]:
    """The faceid modules `name` imports (relative imports resolved), at module level or inside functions."""
    package = name.rsplit(".", 1)[0] if not path.name == "__init__.py" else name.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base.startswith("faceid"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("faceid"))
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in MAY_IMPORT else None


def test_imports_flow_one_way_between_stages():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        stage = _stage(name)
        if stage is None:
            continue
        for target in _imports(name, path):
            other = _stage(target)
            if other is not None and other != stage and other not in MAY_IMPORT[stage]:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the flow core <- model <- {data, eval, gallery} <- {train, app}: " + ", ".join(
        sorted(wrong)
    )


def test_no_module_imports_itself_in_a_circle():
    modules = _modules()
    graph = {n: {t for t in _imports(n, p) if t in modules and t != n} for n, p in modules.items()}
    for n in graph:  # a package's __init__ is no part of a circle here (ours hand nothing on at import time)
        graph[n] = {t for t in graph[n] if not t.endswith("__init__")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (loop := visit(nxt, trail + [node])):
                return loop
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            loop = visit(start, [])
            assert loop is None, "import circle: " + " -> ".join(loop)


def test_modules_and_classes_stay_readable():
    big = []
    for name, path in _modules().items():
        source = path.read_text()
        if (lines := source.count("\n")) > MAX_MODULE_LINES:
            big.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                big.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not big, "split these: " + ", ".join(big)


def test_the_checks_see_real_imports():
    """Guard the guard: the import reader finds a known edge (the app's session imports the model's runtime)."""
    modules = _modules()
    assert "faceid.model.runtime" in _imports("faceid.app.session", modules["faceid.app.session"])


def test_the_app_reads_only_the_detector_of_the_synthetic_stage():
    """The app loads a synthetic-face detector without the trainer: it imports faceid.synthetic.detector_model
    alone, and that module imports only core and model."""
    modules = _modules()
    used = {t for n, p in modules.items() if _stage(n) == "app" for t in _imports(n, p) if _stage(t) == "synthetic"}
    assert used <= {
        "faceid.synthetic.detector_model",
        "faceid.synthetic.detector_model.load_synthetic_detector",
        "faceid.synthetic.detector_model.SyntheticFaceDetector",
    }, used
    name = "faceid.synthetic.detector_model"
    assert {_stage(t) for t in _imports(name, modules[name])} - {None} <= {"core", "model", "synthetic"}
    assert not {t for t in _imports(name, modules[name]) if _stage(t) == "synthetic" and t != name}
