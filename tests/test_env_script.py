"""scripts/env.sh: one shared venv per dependency set and Python, each clone importing its own code."""

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.subprocess


def _clone(into: Path) -> Path:
    """The files env.sh and an import need, as a separate clone would have them."""
    shutil.copytree(REPO / "torchreid_fgdi", into / "torchreid_fgdi", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "scripts", into / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.cfg", "constraints.txt"):
        shutil.copy(REPO / name, into)
    return into


def _env_sh(clone: Path, *command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(clone / "scripts" / "env.sh"), *command],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _fake_python(fake: Path, python_id: str) -> Path:
    """A Python at `fake` that reports `python_id` and fails at `-m venv`: env.sh names the venv it
    would create, then stops."""
    fake.write_text(f'#!/bin/sh\nif [ "$1" = -c ]; then echo "{python_id}"; else exit 3; fi\n')
    fake.chmod(0o755)
    return fake


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
        fake = _fake_python(tmp_path / f"python-{version}", f"{version} x86_64")
        done = _env_sh(REPO, "true", cwd=tmp_path, TORCHREID_FGDI_CACHE=str(tmp_path / "cache"), PYTHON=str(fake))
        assert done.returncode == 3
        created = next(line for line in done.stderr.splitlines() if line.startswith("[env] creating "))
        assert version in created
        paths.append(created.split()[2])
    assert paths[0] != paths[1]


def _venv_named(clone: Path, tmp_path: Path) -> str:
    fake = _fake_python(tmp_path / "python-fake", "3.11.9 x86_64")
    done = _env_sh(clone, "true", cwd=tmp_path, TORCHREID_FGDI_CACHE=str(tmp_path / "cache"), PYTHON=str(fake))
    assert done.returncode == 3, done.stderr
    return next(line for line in done.stderr.splitlines() if line.startswith("[env] creating ")).split()[2]


def test_the_venv_key_includes_the_package_options_in_setup_cfg(tmp_path):
    """setup.cfg holds the dependencies and extras: another setup.cfg gets another venv."""
    clone = _clone(tmp_path / "clone")
    before = _venv_named(clone, tmp_path)
    assert _venv_named(clone, tmp_path) == before
    with open(clone / "setup.cfg", "a") as f:
        f.write("\n# a dependency changed\n")
    assert _venv_named(clone, tmp_path) != before


@pytest.mark.skipif(not (Path(sys.prefix) / ".complete").is_file(), reason="the tests run outside env.sh's venv")
def test_venvs_unused_for_a_month_are_removed_unless_in_use(tmp_path):
    cache = tmp_path / "cache"
    python_id = subprocess.run(
        [sys.executable, "-c", "import platform, sys; print(sys.version, platform.machine())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    named = _env_sh(
        REPO,
        "true",
        cwd=tmp_path,
        TORCHREID_FGDI_CACHE=str(cache),
        PYTHON=str(_fake_python(tmp_path / "python-fake", python_id)),
    )
    ours = Path(next(line for line in named.stderr.splitlines() if line.startswith("[env] creating ")).split()[2])
    ours.symlink_to(sys.prefix)  # this clone's venv, complete
    month_ago = time.time() - 40 * 86400
    others = {name: cache / f"venv-{name}" for name in ("stale", "recent", "stale-in-use", "stale-unstamped")}
    for name, folder in others.items():
        folder.mkdir()
        stamp = folder / ".used"
        if name != "stale-unstamped":
            stamp.touch()
        os.utime(stamp if stamp.exists() else folder, (month_ago, month_ago) if name != "recent" else None)
    with open(f"{others['stale-in-use']}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # a command running in it
        done = _env_sh(
            REPO, "python", "-c", "print('ran')", cwd=tmp_path, TORCHREID_FGDI_CACHE=str(cache), PYTHON=sys.executable
        )
    assert done.returncode == 0 and done.stdout == "ran\n", done.stderr
    assert sorted(path.name for path in cache.glob("venv-*") if path.is_dir()) == sorted(
        [ours.name, "venv-recent", "venv-stale-in-use"]
    )
    assert f"[env] removing {others['stale']}: unused for over 30 days" in done.stderr
    assert (ours / ".used").stat().st_mtime > month_ago
