"""What a user installs: a console script per command, the configs and py.typed as package data, a
licence, one version, and modules without import cycles."""

import ast
import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import torchreid_fgdi
from torchreid_fgdi.cli import benchmark
from torchreid_fgdi.data.readiness import DatasetsNotReadyError

PACKAGE = Path(torchreid_fgdi.__file__).parent
REPO = PACKAGE.parent
COMMANDS = (
    "torchreid-fgdi",
    "torchreid-fgdi-benchmark",
    "torchreid-fgdi-search",
    "torchreid-fgdi-export",
    "torchreid-fgdi-weights",
    "torchreid-fgdi-synthetic",
    "torchreid-fgdi-pretrain",
)


def _console_scripts() -> dict:
    found = importlib.metadata.distribution("torchreid-fgdi").entry_points
    return {ep.name: ep for ep in found if ep.group == "console_scripts"}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_a_console_script_whose_usage_names_it(name, monkeypatch, capsys):
    command = _console_scripts()[name].load()
    monkeypatch.setattr(sys, "argv", [f"/somewhere/{name}.py", "--help"])
    with pytest.raises(SystemExit) as done:
        command()
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name} ")


def test_no_console_script_beyond_the_commands():
    assert sorted(_console_scripts()) == sorted(COMMANDS)


@pytest.mark.subprocess
def test_the_wheel_ships_configs_py_typed_licence_and_entry_points(tmp_path):
    """Built as `pip install .` builds it, from a copy (setuptools writes build/ into the source)."""
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "torchreid_fgdi", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        check=True,
        cwd=source,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("torchreid_fgdi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO).as_posix() for p in (PACKAGE / "configs").rglob("*.yaml")}
    assert {"torchreid_fgdi/configs/protocols/p1.yaml", "torchreid_fgdi/configs/models/fgdi.yaml"} <= configs
    assert configs <= names and "torchreid_fgdi/py.typed" in names
    dist_info = f"torchreid_fgdi-{torchreid_fgdi.__version__}.dist-info"
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata and "Requires-Python: >=3.10" in metadata
    assert f"{dist_info}/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert all(f"{name} = torchreid_fgdi.cli.commands:" in entry_points for name in COMMANDS)
    assert not any(name.startswith(("tests/", "configs/")) for name in names)


def test_the_version_is_the_packages_and_the_licence_is_mit():
    assert importlib.metadata.version("torchreid-fgdi") == torchreid_fgdi.__version__
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_the_top_level_configs_are_the_packaged_ones():
    assert (REPO / "configs").resolve() == (PACKAGE / "configs").resolve()
    assert Path(benchmark.PACKAGED_CONFIGS).resolve() == (PACKAGE / "configs").resolve()


def test_a_protocol_runs_from_any_folder_up_to_the_readiness_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the installed ones are read
    with pytest.raises(DatasetsNotReadyError, match="market1501"):
        benchmark.main(["--protocol", "p1", "--root", str(tmp_path / "empty")])


def _imports(path: Path, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules that `module` imports anywhere in its file, function bodies included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1] if node.level else []
            full = ".".join(base + ([node.module] if node.module else []))
            names = [f"{full}.{alias.name}" if f"{full}.{alias.name}" in modules else full for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def test_no_module_imports_one_that_imports_it_back():
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = (path, parts[-1] == "__init__")
    graph = {m: _imports(path, m, is_package, set(files)) for m, (path, is_package) in files.items()}
    assert "torchreid_fgdi.models.hub" in graph["torchreid_fgdi.models.clip_weights"]  # the walk sees imports

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    cycles = sorted(m for m in graph if m in reachable(m))
    assert not cycles, f"modules importing one that imports them back: {cycles}"
