"""The peers' compiled rank evaluators, built from their public sources into a cache, never vendored.

torchreid's and fast-reid's ``rank_cy.pyx`` are fetched at a pinned commit (checked against a
SHA-256) or read from a folder given with ``--peer-sources`` (one sub-folder per peer), compiled
with Cython and the machine's C compiler into ``$TORCHREID_FGDI_CACHE/peers/``, and imported from
there. A peer that cannot be built is reported with the reason; the benchmarks then time
torchreid's Python reference instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from typing import NamedTuple

from torchreid_fgdi.utils.cache import cache_root


class Peer(NamedTuple):
    name: str
    url: str
    sha256: str


PEERS = (
    Peer(
        "torchreid",
        "https://raw.githubusercontent.com/KaiyangZhou/deep-person-reid/"
        "f8cd150fdf77e8d9e1ed143b7f308c2c609ded50/torchreid/metrics/rank_cylib/rank_cy.pyx",
        "f9a41fdf672fcb35e5a6be5858d3a75c451bdc3219cf80f14846feebdbb35dbf",
    ),
    Peer(
        "fast-reid",
        "https://raw.githubusercontent.com/JDAI-CV/fast-reid/"
        "c9bc3ceb2f7a6438b62fb515ea3df6d1e999e95d/fastreid/evaluation/rank_cylib/rank_cy.pyx",
        "2b60f93303b98e996dad2327494e212e3f017d7293d854c97c3f51fdd7a171cb",
    ),
)

_SETUP = """
import numpy
from setuptools import Extension, setup
from Cython.Build import cythonize
setup(ext_modules=cythonize([Extension("rank_cy", ["rank_cy.pyx"], include_dirs=[numpy.get_include()],
      extra_compile_args=["-O3"])], language_level=3, quiet=True), script_args=["build_ext", "--inplace", "-q"])
"""


def _source(peer: Peer, sources: str) -> bytes:
    local = osp.join(sources, peer.name, "rank_cy.pyx") if sources else ""
    if local and osp.isfile(local):
        with open(local, "rb") as f:
            data = f.read()
    else:
        with urllib.request.urlopen(peer.url, timeout=20) as response:
            data = response.read()
    if hashlib.sha256(data).hexdigest() != peer.sha256:
        raise RuntimeError(f"{local or peer.url} is not the pinned source (SHA-256 differs)")
    return data


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location("rank_cy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _built(folder: str) -> list[str]:
    names = os.listdir(folder) if osp.isdir(folder) else []
    return [name for name in names if name.startswith("rank_cy") and name.endswith(".so")]


def build(peer: Peer, sources: str = "") -> Callable:
    """The peer's compiled `evaluate_cy(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, cuhk03)`."""
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    folder = osp.join(cache_root(), "peers", f"{peer.name}-{peer.sha256[:12]}-{python}")
    built = _built(folder)
    if not built:
        data = _source(peer, sources)
        work = tempfile.mkdtemp(prefix=f"{peer.name}-build-")
        try:
            with open(osp.join(work, "rank_cy.pyx"), "wb") as f:
                f.write(data)
            with open(osp.join(work, "setup.py"), "w") as f:
                f.write(_SETUP)
            done = subprocess.run([sys.executable, "setup.py"], cwd=work, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"compiling failed: {done.stderr.strip().splitlines()[-1:]}")
            os.makedirs(osp.dirname(folder), exist_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(work, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        built = _built(folder)
    return _load(osp.join(folder, built[0]), peer.name).evaluate_cy


def available(sources: str = "") -> dict[str, Callable]:
    """Every peer that builds here, by name; prints why the others do not."""
    found = {}
    for peer in PEERS:
        try:
            found[peer.name] = build(peer, sources)
        except Exception as error:  # a benchmark goes on without the peer, saying why
            print(f"[peers] {peer.name}'s compiled evaluator is not available: {error}")
    return found
