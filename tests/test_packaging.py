"""What a user installs: a console script per command, the configs and py.typed as package data (an
editable install and a plain one alike), a licence, one version, extras whose absence is refused in
one line naming them, and modules without import cycles."""

import ast
import configparser
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import torchreid_fgdi
from torchreid_fgdi.cli import benchmark, export, pretrain, refusals
from torchreid_fgdi.config import load_config, loading
from torchreid_fgdi.data.readiness import DatasetsNotReadyError
from torchreid_fgdi.errors import MissingExtraError
from torchreid_fgdi.tools import nearest

PACKAGE = Path(torchreid_fgdi.__file__).parent
REPO = PACKAGE.parent
COMMANDS = {  # console script -> its module in torchreid_fgdi.cli
    "torchreid-fgdi": "train",
    "torchreid-fgdi-benchmark": "benchmark",
    "torchreid-fgdi-search": "search",
    "torchreid-fgdi-export": "export",
    "torchreid-fgdi-weights": "weights",
    "torchreid-fgdi-synthetic": "synthetic",
    "torchreid-fgdi-pretrain": "pretrain",
}


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


def test_no_console_script_beyond_the_commands_and_each_runs_its_cli_modules_main():
    for name, module in COMMANDS.items():
        assert _console_scripts()[name].value == f"torchreid_fgdi.cli.{module}:main"
    assert sorted(_console_scripts()) == sorted(COMMANDS)


def test_the_metadata_is_in_setup_cfg_and_pyproject_holds_the_build_and_the_tools():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "[build-system]" in pyproject and "[project" not in pyproject and "[tool.setuptools" not in pyproject
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["name"] == "torchreid-fgdi"
    extras = setup["options.extras_require"]
    assert {"pretrain", "search", "export", "all", "test"} <= set(extras)
    required = setup["options"]["install_requires"]
    assert "[training]" not in required and "faiss" not in required and "onnx" not in required


def _wheel(tmp_path: Path) -> Path:
    """Built as `pip install .` builds it, from a copy (setuptools writes build/ into the source),
    with deprecation warnings of setuptools as errors."""
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source / "torchreid_fgdi", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.cfg", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        check=True,
        cwd=source,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"},
    )
    (wheel,) = tmp_path.glob("torchreid_fgdi-*.whl")
    return wheel


@pytest.mark.subprocess
def test_the_wheel_ships_configs_the_tiny_clip_py_typed_licence_and_entry_points(tmp_path):
    wheel = _wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO).as_posix() for p in (PACKAGE / "configs").rglob("*.yaml")}
    assert {"torchreid_fgdi/configs/protocols/p1.yaml", "torchreid_fgdi/configs/models/fgdi.yaml"} <= configs
    assert configs <= names and "torchreid_fgdi/py.typed" in names
    shipped = {p.relative_to(REPO).as_posix() for p in (PACKAGE / "synthetic" / "weights").iterdir()}
    assert {
        "torchreid_fgdi/synthetic/weights/open_clip_tiny.pt",
        "torchreid_fgdi/synthetic/weights/open_clip_tiny.json",
    } <= shipped
    assert shipped <= names  # the synthetic benchmark's tiny CLIP and its record: a plain install needs no pretraining
    dist_info = f"torchreid_fgdi-{torchreid_fgdi.__version__}.dist-info"
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata and "Requires-Python: >=3.10" in metadata
    assert f"{dist_info}/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    for name, module in COMMANDS.items():
        assert f"{name} = torchreid_fgdi.cli.{module}:main" in entry_points
    assert not any(name.startswith(("tests/", "configs/")) for name in names)
    for extra in ("pretrain", "search", "export", "all", "test"):
        assert f"Provides-Extra: {extra}" in metadata
    assert 'Requires-Dist: faiss-cpu; extra == "search"' in metadata

    # A plain (non-editable) install into a folder reads its own configs from any folder.
    target = tmp_path / "target"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)]
    subprocess.run(pip, check=True, timeout=300)
    installed = target / "torchreid_fgdi" / "configs"
    assert {p.relative_to(target).as_posix() for p in installed.rglob("*.yaml")} == configs
    show = (
        "import sys; sys.path.insert(0, sys.argv[1]); from torchreid_fgdi.config import loading; "
        "print(loading.PACKAGED_CONFIGS); print(loading.load_config('synthetic/fgdi_tiny').dump())"
    )
    done = subprocess.run(
        [sys.executable, "-c", show, str(target)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=True
    )
    where, note, dump = done.stdout.split("\n", 2)
    assert Path(where) == installed  # by name, from a folder without configs/: the installed copy
    packaged = installed / "synthetic" / "fgdi_tiny.yaml"
    assert note == f"=> Config synthetic/fgdi_tiny: the one installed with the package, {packaged}"
    assert dump.strip() == load_config(str(PACKAGE / "configs" / "synthetic" / "fgdi_tiny.yaml")).dump().strip()


def test_the_version_is_the_packages_and_the_licence_is_mit():
    assert importlib.metadata.version("torchreid-fgdi") == torchreid_fgdi.__version__
    assert (REPO / "LICENSE").read_text().startswith("MIT License")


def test_the_top_level_configs_are_the_packaged_ones():
    assert (REPO / "configs").resolve() == (PACKAGE / "configs").resolve()
    assert Path(loading.PACKAGED_CONFIGS).resolve() == (PACKAGE / "configs").resolve()


def test_a_protocol_runs_from_any_folder_up_to_the_readiness_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the installed ones are read
    with pytest.raises(DatasetsNotReadyError, match="market1501"):
        benchmark.benchmark(["--protocol", "p1", "--root", str(tmp_path / "empty"), "model.pretrained", "False"])


# (extra, a module it brings, the command that needs it and the words it refuses)
EXTRA_USES = [
    ("export", "onnx", export.main, ["--weights", "missing.pth", "--format", "onnx"]),
    ("export", "onnxscript", export.main, ["--weights", "missing.pth"]),
    ("export", "onnxruntime", export.main, ["--weights", "missing.pth", "--format", "onnx"]),
    ("pretrain", "pandas", pretrain.main, ["--epochs", "1"]),
    ("pretrain", "webdataset", pretrain.main, ["--epochs", "1"]),
    ("pretrain", "open_clip_train.main", pretrain.main, ["--epochs", "1"]),
]


@pytest.mark.parametrize(("extra", "module", "command", "argv"), EXTRA_USES, ids=[u[1] for u in EXTRA_USES])
def test_without_an_extra_its_command_refuses_in_one_line_naming_it(
    extra, module, command, argv, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, module, None)  # what `import module` meets when it is not installed
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCHREID_FGDI_CACHE", str(tmp_path / "cache"))  # pretrain's; nothing is cached there
    assert command(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert f"needs {module}, which is not installed: it comes with the {extra} extra" in err
    assert f'pip install "torchreid-fgdi[{extra}]"' in err
    assert not list(tmp_path.rglob("*.csv"))  # refused before the corpus was written


def test_torchscript_export_needs_no_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(FileNotFoundError, match="missing.pth"):  # past the extras, to the checkpoint
        export.export(["--weights", str(tmp_path / "missing.pth"), "--format", "torchscript"])


def test_without_faiss_a_large_gallery_is_ranked_by_torch_with_a_note_and_asking_for_faiss_refuses(monkeypatch, capsys):
    queries, gallery = torch.nn.functional.normalize(torch.randn(3, 8), dim=1), torch.eye(8)[:6]
    monkeypatch.setitem(sys.modules, "faiss", None)
    monkeypatch.setattr(nearest, "FAISS_FROM", 5)
    assert all(map(torch.equal, nearest.top_k(queries, gallery, 4), nearest.top_k(queries, gallery, 4, "torch")))
    assert capsys.readouterr().out == nearest.WITHOUT_FAISS + "\n"
    assert 'pip install "torchreid-fgdi[search]"' in nearest.WITHOUT_FAISS
    with pytest.raises(MissingExtraError, match=r'the search extra, pip install "torchreid-fgdi\[search\]"'):
        nearest.top_k(queries, gallery, 4, "faiss")


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
