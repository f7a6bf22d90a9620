"""The package's folders are layers: a module imports only its own folder or the ones below it, and no
module imports itself back through others. docs/layout.md explains the order."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "torchreid_fgdi"
# Lowest first. The root's __init__ / __main__ sit above everything; errors.py below everything.
LAYERS = (
    "errors",
    "utils",
    "data",
    "models",
    "evaluation",
    "synthetic",
    "engine",
    "integration",
    "config",
    "tools",
    "cli",
    "__init__",
    "__main__",
)


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every package module `path` imports, at any depth of the file (function-level imports too)."""
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("torchreid_fgdi"))
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if not module.startswith("torchreid_fgdi"):
                continue
            for alias in node.names:  # `from . import x` names a module; `from .x import y` a name in x
                candidate = f"{module}.{alias.name}"
                found.add(candidate if _exists(candidate) else module)
    return found


def _exists(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return LAYERS.index(top)


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_root_holds_folders_only():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules == ["__init__.py", "__main__.py", "errors.py"]
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - {"configs"} == set(LAYERS[1:-2])


def test_no_import_runs_up_the_layers():
    """(`from torchreid_fgdi import __version__` is not an arrow: any import of the package runs its
    __init__ first.)"""
    upward = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module) and target != "torchreid_fgdi"
    ]
    assert upward == []


def test_no_import_cycle():
    graph = _graph()
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target == module or target not in graph:
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    # A package's __init__ re-exporting its own submodules is how a folder shows its face, not a cycle.
    real = [c for c in cycles if not _only_package_faces(c)]
    assert real == []


def _only_package_faces(cycle: str) -> bool:
    steps = cycle.split(" -> ")
    return all(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(steps, steps[1:]))
