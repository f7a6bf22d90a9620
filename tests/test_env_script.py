"""scripts/env.sh: one shared venv per dependency set and Python, each clone importing its own code."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.subprocess


def _clone(into: Path) -> Path:
    """The files env.sh and an import need, as a separate clone would have them."""
    shutil.copytree(REPO / "torchreid_fgdi", into / "torchreid_fgdi", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "scripts", into / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, into)
    return into


def _env_sh(clone: Path, *command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(clone / "scripts" / "env.sh"), *command],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(not (Path(sys.prefix) / ".complete").is_file(), reason="the tests run outside env.sh's venv")
def test_two_clones_share_the_venv_and_each_imports_its_own_code(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = {"TORCHREID_FGDI_CACHE": str(Path(sys.prefix).parent), "PYTHON": sys.executable}
    where = "import os, sys, torchreid_fgdi; print(torchreid_fgdi.__file__); print(os.getcwd()); print(sys.prefix)"
    for name in ("a", "b", "a"):
        done = _env_sh(
            _clone(tmp_path / name) if name not in os.listdir(tmp_path) else tmp_path / name,
            "python",
            "-c",
            where,
            cwd=elsewhere,
            **cache,
        )
        assert done.returncode == 0, done.stderr
        module, cwd, prefix = done.stdout.split()
        assert Path(module).parent == tmp_path / name / "torchreid_fgdi"
        assert cwd == str(elsewhere) and prefix == sys.prefix  # the caller's folder; the shared venv


def test_the_venv_key_includes_the_python_version(tmp_path):
    """Two interpreters reporting other versions get other venvs (a fake one stops at `-m venv`)."""
    paths = []
    for version in ("3.11.9", "3.12.4"):
        fake = tmp_path / f"python-{version}"
        fake.write_text(f'#!/bin/sh\nif [ "$1" = -c ]; then echo "{version} x86_64"; else exit 3; fi\n')
        fake.chmod(0o755)
        done = _env_sh(REPO, "true", cwd=tmp_path, TORCHREID_FGDI_CACHE=str(tmp_path / "cache"), PYTHON=str(fake))
        assert done.returncode == 3
        created = next(line for line in done.stderr.splitlines() if line.startswith("[env] creating "))
        assert version in created
        paths.append(created.split()[2])
    assert paths[0] != paths[1]
