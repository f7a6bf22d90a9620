"""Every script in scripts/benchmarks/ runs at its ``--tiny`` size and prints its ratios, so none rots.

The scripts run as a user runs them (``python scripts/benchmarks/<name>.py``), two at a time, each
on one thread; a ratio line must hold numbers that are finite and above zero. The sizes are too
small for the numbers to mean anything: what is tested is that the code path still works.
"""

import importlib.util
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from .conftest import FIXTURES

BENCHMARKS = Path(__file__).resolve().parents[1] / "scripts" / "benchmarks"
PEER_SOURCES = FIXTURES / "peer-evaluators"
LIBRARIES = {"_common.py", "peers.py"}  # imported by the scripts, not run
N = r"([0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)"  # a printed number
# script: (the pattern of its ratio lines, every group a ratio; how many such lines at least)
RATIO_LINES = {
    "extract_speed.py": (rf"images/s \({N}x\)$", 5),
    "msmt17_scale.py": (rf"^ratios .*: time {N}x, peak memory {N}x$", 1),
    "rank_speed.py": (rf"(?:ours is {N}x as fast|floor\): {N}x$)", 4),
    "rerank_scale.py": (rf"ratios .*: time {N}x, peak memory {N}x$", 1),
    "search_crossover.py": (rf"^\s*\d+\s+\d+\s+{N}\s+{N}\s+{N}\s+(?:True|False)$", 4),
    "stage3_memory.py": (rf"step time at batch \d+: {N}x the step without it$", 1),
    "stage3_step.py": (rf"ratio {N}x$", 2),
    "stage3_vs_authors.py": (rf"s/step\s+{N}x (?:ours|the authors')$", 8),
}


def _arguments(name: str) -> list[str]:
    if name != "rank_speed.py":
        return ["--tiny"]
    if PEER_SOURCES.is_dir():  # the compiled peers, as tests/test_peer_evaluators.py builds them
        return ["--tiny", "--repeats", "1", "--peer-sources", str(PEER_SOURCES)]
    return ["--tiny", "--repeats", "1", "--skip-peers"]


def _run(name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, str(BENCHMARKS / name), *_arguments(name)]
    return subprocess.run(command, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def outputs() -> dict[str, subprocess.CompletedProcess]:
    """Every script's run at its tiny size, two side by side."""
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(RATIO_LINES, pool.map(_run, RATIO_LINES)))


def test_every_script_is_run_here():
    scripts = {path.name for path in BENCHMARKS.glob("*.py")} - LIBRARIES
    assert scripts == set(RATIO_LINES)


@pytest.mark.subprocess
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", sorted(RATIO_LINES))
def test_the_script_runs_tiny_and_prints_its_ratios(outputs, name):
    done = outputs[name]
    assert done.returncode == 0, done.stderr[-3000:]
    pattern, at_least = RATIO_LINES[name]
    found = [match for line in done.stdout.splitlines() if (match := re.search(pattern, line))]
    assert len(found) >= at_least, done.stdout
    ratios = [float(group) for match in found for group in match.groups() if group is not None]
    assert ratios and all(math.isfinite(r) and r > 0 for r in ratios), done.stdout


@pytest.mark.subprocess
@pytest.mark.timeout(1200)
def test_a_peer_or_the_authors_left_out_is_said_and_the_rest_runs(outputs):
    assert "[authors] their steps are skipped: --tiny" in outputs["stage3_vs_authors.py"].stdout
    if not PEER_SOURCES.is_dir():
        assert "[peers] skipped, left out (--skip-peers)" in outputs["rank_speed.py"].stdout


def test_rank_speeds_python_reference_is_called_as_the_compiled_peers_are(monkeypatch):
    """Without peers, rank_speed.py times torchreid's Python evaluator in their place, with their
    arguments: six for the Market-1501 metric (it died of a missing use_metric_cuhk03), seven for CUHK03."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("rank_speed", BENCHMARKS / "rank_speed.py")
    rank_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rank_speed)
    (evaluate,) = rank_speed._peers(SimpleNamespace(skip_peers=True, peer_sources="")).values()
    rng = np.random.default_rng(0)
    q_pids, g_pids, q_cams, g_cams = rank_speed.reid_split(20, 80, num_ids=10, num_cams=2)
    distmat = rng.random((20, 80), dtype=np.float32)
    ours = rank_speed.evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, 10)
    theirs = rank_speed._result(evaluate(distmat, q_pids, g_pids, q_cams, g_cams, 10))
    assert rank_speed._same(ours, theirs)
    np.random.seed(0)
    cmc, mAP = rank_speed._result(evaluate(distmat, q_pids, g_pids, q_cams, g_cams, 10, True))
    assert len(cmc) == 10 and 0 < mAP <= 1
