"""Bad input, faults and interrupted runs: each is refused or survived, with a message that names it."""

import contextlib
import glob
import hashlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import torchreid
from PIL import Image

from tests.fake_datasets import _img, make_market1501, make_msmt17
from tests.test_benchmark import ABLATION
from tests.test_distributed import _free_port
from tests.test_fgdi_engine import CONFIG, SHORT, _engine
from torchreid_fgdi.cli import benchmark, refusals, run_pool
from torchreid_fgdi.cli.resume import resume_path
from torchreid_fgdi.cli.train import main as train_main
from torchreid_fgdi.cli.train import train
from torchreid_fgdi.config import load_config
from torchreid_fgdi.config.checks import ConfigError
from torchreid_fgdi.data import DomainImageDataManager
from torchreid_fgdi.data.readiness import DatasetsNotReadyError, ensure_datasets
from torchreid_fgdi.engine.fgdi import NonFiniteLossError
from torchreid_fgdi.models.hub import ChecksumError, WeightsUnavailableError, download

MARKET = "market1501/Market-1501-v15.09.15"


# ---- config -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "opts,error",
    [
        (["train.max_epoch", "ten"], "train.max_epoch in the command line must be an integer like its default"),
        (["fgdi.stage3_epochs", "-1"], r"fgdi.stage3_epochs must be >= 0, got -1"),
        (["model.name", "fgdi_vit_b61"], r"unknown model 'fgdi_vit_b61' in model.name. Did you mean fgdi_vit_b16"),
        (["data.targets", "['market']"], r"unknown dataset 'market' in data.targets. Did you mean market1501\?"),
        (["train.batch_size", "30"], r"train.batch_size 30 is not a multiple of sampler.num_instances \(K\) 4"),
        (["fgdi.guide_direction", "up"], "fgdi.guide_direction must be one of paper, authors; got 'up'"),
    ],
)
def test_a_bad_config_is_rejected_before_any_work(tmp_path, opts, error):
    root, save_dir = tmp_path / "data", tmp_path / "log"
    with pytest.raises(ConfigError, match=error):
        train(["--config-file", CONFIG, "--root", str(root), "data.save_dir", str(save_dir), *opts])
    assert not root.exists() and not save_dir.exists()


def test_unknown_names_list_what_is_available():
    with pytest.raises(ConfigError) as err:
        load_config([], ["model.name", "osnet"])
    assert "Available: " in str(err.value) and "osnet_ain_x1_0" in str(err.value) and "fgdi_tiny" in str(err.value)


def test_a_wrong_type_in_a_file_names_the_file_and_a_number_is_widened(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_epoch: 3.5\n")
    with pytest.raises(ConfigError, match=r"train.max_epoch in .*bad.yaml must be an integer like its default 60"):
        load_config([str(bad)])
    cfg = load_config([], ["fgdi.image.lr", "1", "data.sources", "market1501", "test.plots", "false"])
    assert cfg.fgdi.image.lr == 1.0 and isinstance(cfg.fgdi.image.lr, float) and cfg.data.sources == ["market1501"]
    assert cfg.test.plots is False
    good = tmp_path / "good.yaml"
    good.write_text("fgdi:\n  image:\n    lr: 3e-4\n")  # YAML reads 3e-4 as a string; yacs as a number
    assert load_config([str(good)]).fgdi.image.lr == 3e-4


def test_resume_auto_takes_the_newest_whole_checkpoint(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model.pth.tar-2", "model.pth.tar-10"):
        torch.save({"state_dict": {}, "epoch": int(name.split("-")[1])}, folder / name)
    (folder / "model.pth.tar-11").write_bytes(b"")  # damaged: skipped
    (folder / "model.pth.tar-12.tmp4321").write_bytes(b"")  # a killed save's temporary file
    cfg = load_config([], ["model.name", "osnet_x0_25", "data.save_dir", str(tmp_path), "model.resume", "auto"])
    assert resume_path(cfg, fgdi=False) == str(folder / "model.pth.tar-10")
    cfg.defrost()
    cfg.model.name = "fgdi_tiny"
    assert resume_path(cfg, fgdi=True) == ""  # no FGDI checkpoint there: a fresh start


@pytest.mark.parametrize(
    "batch,k,error",
    [
        ("36", "12", r"num_instances \(K\) 12 is more than the images of every training identity \(at most 9\)"),
        ("78", "2", r"a batch of 78 needs 39 identities x K=2 images, but the sources have 36 identities"),
    ],
)
def test_a_batch_the_identities_cannot_fill_is_refused_before_the_model_is_built(tiny_root, tmp_path, batch, k, error):
    args = ["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(tmp_path)]
    with pytest.raises(ValueError, match=error):
        train([*args, "train.batch_size", batch, "sampler.num_instances", k])
    assert [p.name.split("-")[0] for p in tmp_path.iterdir() if p.name != ".run.lock"] == ["train.log"]


def test_random_identity_batches_a_source_cannot_fill_are_one_error_line(tiny_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(refusals.DEBUG_VARIABLE, raising=False)
    args = ["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(tmp_path), "-s", "synth_a"]
    args += ["-t", "synth_d", "sampler.train_sampler", "RandomIdentitySampler", "train.batch_size", "64"]
    assert train_main(args) == 2  # torchreid's sampler stopped on a bare AssertionError
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "error: a batch of 64 needs 16 identities x K=4 images, but the sources have 12 identities (synth_a 12): "
        "lower train.batch_size to at most 48, or add sources"
    )
    assert [p.name.split("-")[0] for p in tmp_path.iterdir() if p.name != ".run.lock"] == ["train.log"]


# ---- data -------------------------------------------------------------------------------
MARKET_DATA = {"sources": "market1501", "targets": "market1501", "height": 32, "width": 16, "workers": 1}


def _market(root, **kwargs):
    return DomainImageDataManager(root=str(root), **MARKET_DATA, use_gpu=False, batch_size_train=6, **kwargs)


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 128), 40).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


BAD_IMAGES = {"empty": b"", "truncated": _jpeg_bytes()[:400], "not_an_image": b"<html>404</html>"}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_a_bad_image_is_named_before_any_work(tmp_path, kind):
    make_market1501(str(tmp_path))
    bad = tmp_path / MARKET / "bounding_box_train" / "0007_c1s6_028546_01.jpg"
    bad.write_bytes(BAD_IMAGES[kind])
    with pytest.raises(OSError) as err:
        _market(tmp_path)
    assert "cannot be read, nothing was started" in str(err.value) and f"{bad}: " in str(err.value)
    assert "data.skip_unreadable_images True" in str(err.value)


def test_grayscale_rgba_cmyk_and_palette_images_load_as_rgb(tmp_path):
    make_market1501(str(tmp_path))
    train = tmp_path / MARKET / "bounding_box_train"
    for name, mode, fmt in [
        ("0002_c1s1_000451_03.jpg", "L", "JPEG"),
        ("0002_c2s1_000551_01.jpg", "RGBA", "PNG"),
        ("0007_c1s6_028546_01.jpg", "CMYK", "JPEG"),
        ("0007_c3s3_077419_03.jpg", "P", "PNG"),
    ]:
        Image.new("RGB", (8, 16), (200, 10, 10)).convert(mode).save(train / name, format=fmt)
    batch = next(iter(_market(tmp_path, train_sampler="RandomSampler").train_loader))
    assert batch["img"].shape == (6, 3, 32, 16)


def test_opt_in_skip_drops_counts_and_reports_unreadable_images(tmp_path, capsys):
    make_market1501(str(tmp_path))
    bad_train = tmp_path / MARKET / "bounding_box_train" / "0010_c5s1_000001_01.jpg"
    bad_gallery = tmp_path / MARKET / "bounding_box_test" / "0001_c2s1_000301_01.jpg"
    bad_train.write_bytes(BAD_IMAGES["truncated"])
    bad_gallery.write_bytes(b"")
    dm = _market(tmp_path, skip_unreadable_images=True, train_sampler="RandomIdentitySampler", num_instances=2)
    assert set(dm.skipped_images) == {str(bad_train), str(bad_gallery)}
    assert "Skipped 2 unreadable image(s)" in capsys.readouterr().out
    assert len(dm.train_items) == 5 and str(bad_train) not in [item[0] for item in dm.train_items]
    gallery = dm.test_loader["market1501"]["gallery"]
    assert len(gallery.dataset) == 2 and str(bad_gallery) not in [item[0] for item in gallery.dataset.data]
    assert sum(len(b["pid"]) for b in dm.train_loader) > 0 and len(list(gallery)) == 1  # nothing left to fail


def _torchreid_fails_and_the_check_names_it(root, dataset: str, torchreid_error: type) -> str:
    with pytest.raises(torchreid_error):  # torchreid's own parse, with no file named
        torchreid.data.datasets.init_image_dataset(dataset, root=str(root), verbose=False)
    with pytest.raises(DatasetsNotReadyError) as err:
        ensure_datasets(str(root), [dataset])
    return str(err.value)


def test_file_names_torchreid_would_misread_stop_the_run(tmp_path):
    make_market1501(str(tmp_path))
    stray = tmp_path / MARKET / "bounding_box_train" / "copy of 0002.jpg"
    camera = tmp_path / MARKET / "query" / "0001_c9s1_000001_00.jpg"
    _img(str(stray)), _img(str(camera))
    message = _torchreid_fails_and_the_check_names_it(tmp_path, "market1501", AttributeError)
    assert f"{stray}: the name does not parse as 0002_c1s1_000451_03.jpg" in message
    assert f"{camera}: camera 9 outside 1..6" in message


def test_a_folder_named_like_an_identity_is_caught_even_above_a_relative_root(tmp_path, monkeypatch):
    work = tmp_path / "exp_3_c1"  # torchreid would read pid 3, camera 1 for every image below it
    make_market1501(str(work / "data"))
    (work / "data" / MARKET / "query" / "._0001_c1s1_001051_00.jpg").write_bytes(b"")  # macOS metadata: not read
    monkeypatch.chdir(work)
    with pytest.raises(DatasetsNotReadyError, match=r"finds '3_c1' in a folder name first; rename that folder"):
        ensure_datasets("data", ["market1501"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp_3_c1").rename(tmp_path / "exp")
    ensure_datasets("exp/data", ["market1501"])


def test_a_blank_or_dangling_msmt17_list_line_is_named(tmp_path):
    make_msmt17(str(tmp_path))
    lists = tmp_path / "msmt17" / "MSMT17_V1"
    with open(lists / "list_query.txt", "a") as f:
        f.write("\n")
    with open(lists / "list_gallery.txt", "a") as f:
        f.write("0009/0009_000_03_0303noon_0001_0.jpg 9\n")
    message = _torchreid_fails_and_the_check_names_it(tmp_path, "msmt17", ValueError)
    assert f"{lists / 'list_query.txt'} line 3 is blank; torchreid cannot skip it: delete the line" in message
    assert f"{lists / 'list_gallery.txt'} line 4: {lists / 'test' / '0009/0009_000_03_0303noon_0001_0.jpg'}" in message


# ---- downloads --------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_downloads_are_checked_against_their_sha256(served, tmp_path):
    folder, url = served
    payload = os.urandom(5000)
    (folder / "w.pth").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "cache"
    path = download(f"{url}/w.pth", str(cache / "w.pth"), good, size=5000, quiet=True)
    assert open(path, "rb").read() == payload
    assert download(f"{url}/nothing-there", path, good) == path  # already verified: not fetched again
    with pytest.raises(ChecksumError, match=f"sha256 {good}, expected {'0' * 64}; it was deleted"):
        download(f"{url}/w.pth", str(cache / "other.pth"), "0" * 64, quiet=True)
    assert sorted(p.name for p in cache.iterdir()) == ["w.pth"]  # no partial file left
    (cache / "w.pth").write_bytes(payload[:100])
    with pytest.raises(ChecksumError, match="has 100 bytes, expected 5000: a different or damaged file"):
        download(f"{url}/w.pth", path, good, size=5000)
    assert (cache / "w.pth").read_bytes() == payload[:100]  # never overwritten


@pytest.mark.timeout(300)
def test_an_unreachable_download_says_where_to_put_the_file(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/w.pth"
    target = tmp_path / "w.pth"
    with pytest.raises(WeightsUnavailableError, match=f"download {url} by hand and put it at {target} \\(sha256 ab"):
        download(url, str(target), "ab" * 32)
    assert not target.exists()


# ---- numerical faults -------------------------------------------------------------------
def test_a_nan_loss_stops_with_stage_step_and_terms_and_the_last_checkpoint_loads(tiny_root, tmp_path):
    engine = _engine(tiny_root)

    def poison(module, inputs, output):
        if engine.stage == "stage3" and engine.stage_epoch == 1 and engine.epoch_step == 1:
            return output * float("nan")

    engine.model.bottleneck.register_forward_hook(poison)
    with pytest.raises(NonFiniteLossError) as err:
        engine.run(save_dir=str(tmp_path), print_freq=1000)
    latest = tmp_path / "checkpoints" / "latest.pth"
    message = str(err.value)
    assert "non-finite loss in stage3, epoch 2/2, step 2 of the epoch: loss nan, id nan, triplet " in message
    good = tmp_path / "checkpoints" / "stage2b.pth"  # stage-3 epoch 1 trained from it with finite losses
    assert ", i2t " in message and ", guide " in message
    assert f"the newest checkpoint known to be good is {good}: continue with model.resume {good}" in message
    assert f"Not {latest}: no complete epoch has trained from it" in message
    state = torch.load(latest, map_location="cpu", weights_only=True)
    assert (state["stage"], state["stage_epoch"]) == ("stage3", 1)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    _engine(tiny_root).resume(str(latest))


# ---- interrupted runs and determinism ---------------------------------------------------
def _command(root, save_dir, config=CONFIG, *opts):
    return [
        sys.executable,
        "-m",
        "torchreid_fgdi",
        "--config-file",
        config,
        "--root",
        root,
        "data.save_dir",
        str(save_dir),
        "model.resume",
        "auto",
        *opts,
    ]


FGDI_OPTS = [*SHORT, "train.batch_size", "24"]


def _final(save_dir):
    weights = torch.load(save_dir / "checkpoints" / "stage3.pth", map_location="cpu", weights_only=True)
    return weights["state_dict"], json.loads((save_dir / "results.json").read_text())


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _side_by_side(tmp_path, *commands: list[str]) -> None:
    """Runs independent commands at once (each with torch's usual threads, so each computes what it
    would alone) and checks that every one succeeded."""
    logs = [tmp_path / f"side-by-side-{i}.log" for i in range(len(commands))]
    runs = []
    for command, log in zip(commands, logs):
        with open(log, "w") as out:
            runs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
    codes = [run.wait() for run in runs]
    for code, log in zip(codes, logs):
        assert code == 0, log.read_text()[-3000:]


def _kill_seed() -> int:
    """The seed of the kill points: FAULTS_SEED (an integer, or ``random`` for a fresh draw), 0 by default.

    The seed fixes how many checkpoints each run writes and how long after the last one it dies;
    where a kill lands in the run still depends on the machine's speed."""
    chosen = os.environ.get("FAULTS_SEED", "0")
    return random.randrange(1 << 30) if chosen == "random" else int(chosen)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.timeout(1800)  # eleven training runs: minutes, several times that on a shared machine
def test_sigkill_at_seeded_points_resumes_to_the_uninterrupted_result_and_runs_repeat(tiny_root, tmp_path):
    _side_by_side(tmp_path, *(_command(tiny_root, tmp_path / name, CONFIG, *FGDI_OPTS) for name in ("once", "twice")))
    (want, want_results), (again, again_results) = _final(tmp_path / "once"), _final(tmp_path / "twice")
    assert _same(want, again) and want_results == again_results  # same seed, same CPU result

    seed = _kill_seed()
    rng, kills = random.Random(seed), []
    latest = tmp_path / "killed" / "checkpoints" / "latest.pth"
    for _ in range(5):  # each run writes 1-3 more checkpoints, then dies at a random moment
        process = subprocess.Popen(
            _command(tiny_root, tmp_path / "killed", CONFIG, *FGDI_OPTS),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(rng.randint(1, 3)):
            before = latest.stat().st_mtime_ns if latest.exists() else 0
            while process.poll() is None and (not latest.exists() or latest.stat().st_mtime_ns == before):
                time.sleep(0.005)
        try:
            process.wait(timeout=rng.uniform(0, 0.1))
            break  # finished before the kill
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            state = torch.load(latest, map_location="cpu", weights_only=True)
            kills.append(f"{state['stage']} epoch {state['stage_epoch']}")
    subprocess.run(_command(tiny_root, tmp_path / "killed", CONFIG, *FGDI_OPTS), check=True, capture_output=True)
    got, got_results = _final(tmp_path / "killed")
    assert kills, f"no kill landed (FAULTS_SEED={seed})"
    print(f"killed after checkpoints {kills} (FAULTS_SEED={seed})")
    assert _same(want, got), f"killed after checkpoints {kills} (FAULTS_SEED={seed})"
    assert got_results == want_results


@pytest.mark.subprocess
@pytest.mark.timeout(1200)
def test_a_baseline_repeats_exactly_with_the_same_seed(tiny_root, tmp_path):
    config = CONFIG.replace("fgdi_tiny.yaml", "osnet_ain_x0_25.yaml")
    opts = ["train.max_epoch", "2", "train.batch_size", "24"]
    runs = ("once", "twice")
    _side_by_side(tmp_path, *(_command(tiny_root, tmp_path / name, config, *opts) for name in runs))
    once, twice = (torchreid.utils.load_checkpoint(str(tmp_path / n / "model" / "model.pth.tar-2")) for n in runs)
    assert _same(once["state_dict"], twice["state_dict"])
    assert (tmp_path / "once" / "results.json").read_text() == (tmp_path / "twice" / "results.json").read_text()


# ---- a benchmark stopped: by a signal, or by a run killed ------------------------------------
RUNS = {"fgdi_tiny": "log/synthetic/fgdi_tiny", "fgdi_tiny_stage1_only": "log/synthetic/fgdi_tiny_stage1_only"}
CONTINUE = (
    "Each run's folder keeps its last checkpoint: the same command with model.resume auto continues the runs "
    "that did not finish (and only tests the finished ones again) (TORCHREID_FGDI_DEBUG=1 shows the traceback)"
)
BOTH_STOPPED = "0 run(s) finished, 0 not started, stopped: " + ", ".join(f"{n} (in {f})" for n, f in RUNS.items())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda sig: sig.name)
def test_a_signal_stops_runs_one_by_one_in_one_line(tiny_root, tmp_path, monkeypatch, capsys, sig):
    started = []

    def train(argv):
        started.append(argv)
        os.kill(os.getpid(), sig)
        time.sleep(60)  # the signal arrives here

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_pool.training, "train", train)
    status = benchmark.main(["--configs", CONFIG, ABLATION, "--root", tiny_root])
    assert (status, len(started)) == (128 + sig, 1)
    name = signal.Signals(sig).name
    stopped = f"0 run(s) finished, 1 not started, stopped: fgdi_tiny (in {RUNS['fgdi_tiny']})"
    assert capsys.readouterr().err == f"error: stopped by {name}: {stopped}. {CONTINUE}\n"


def _benchmark(root: str, cwd) -> subprocess.Popen:
    """`torchreid-fgdi-benchmark --jobs 2` of two tiny runs long enough to be stopped mid-training,
    leader of its own process group as a command typed in a terminal is."""
    command = [sys.executable, "-m", "torchreid_fgdi.cli.benchmark", "--configs", CONFIG, ABLATION, "--root", root]
    command += ["--jobs", "2", "fgdi.stage1_epochs", "100", "fgdi.checkpoint_every", "1", "model.resume", "auto"]
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _until(condition, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 600
    while not condition():
        assert process.poll() is None, f"the benchmark ended first:\n{process.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _run_processes(pid: int) -> list[int]:
    """The benchmark's runs (its other child is multiprocessing's resource tracker)."""
    runs = []
    for children in glob.glob(f"/proc/{pid}/task/*/children"):
        for child in open(children).read().split():
            with contextlib.suppress(FileNotFoundError), open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    runs.append(int(child))
    return runs


def _ended(process: subprocess.Popen, runs: list[int]) -> tuple[int, list[str]]:
    """The benchmark's exit status and error lines once it ends, checked to leave no run alive."""
    status = process.wait(timeout=120)
    assert runs and not [pid for pid in runs if _alive(pid)]
    return status, process.stderr.read().splitlines()


def _resumed(folder) -> bool:
    line = re.compile(
        rf"=> Resumed from {re.escape(RUNS[folder.name])}/checkpoints/latest.pth: .* continuing with stage1 "
    )
    return any(line.search(open(log).read()) for log in glob.glob(str(folder / "train.log-*")))


@pytest.mark.subprocess
@pytest.mark.timeout(1200)
def test_a_stopped_benchmark_stops_its_runs_and_the_same_command_continues_them(tiny_root, tmp_path):
    folders = [tmp_path / folder for folder in RUNS.values()]
    first = _benchmark(tiny_root, tmp_path)
    _until(lambda: all((folder / "checkpoints" / "latest.pth").exists() for folder in folders), first)
    runs = _run_processes(first.pid)
    first.send_signal(signal.SIGTERM)  # to the benchmark alone
    assert _ended(first, runs) == (143, [f"error: stopped by SIGTERM: {BOTH_STOPPED}. {CONTINUE}"])

    again = _benchmark(tiny_root, tmp_path)
    _until(lambda: all(_resumed(folder) for folder in folders), again)
    runs = _run_processes(again.pid)
    with open(folders[0] / ".run.lock") as f:
        killed = int(f.read().split()[1])  # "pid N on <host> since ..."
    os.kill(killed, signal.SIGKILL)
    killed_by = "was killed by SIGKILL (as the kernel kills a process when memory runs out)"
    other = f"0 run(s) finished, 0 not started, stopped: fgdi_tiny_stage1_only (in {RUNS['fgdi_tiny_stage1_only']})"
    assert _ended(again, runs) == (1, [f"error: fgdi_tiny (in {RUNS['fgdi_tiny']}) {killed_by}; {other}. {CONTINUE}"])


@pytest.mark.subprocess
@pytest.mark.timeout(600)
def test_ctrl_c_stops_a_benchmark_while_its_runs_start_in_one_line(tiny_root, tmp_path):
    process = _benchmark(tiny_root, tmp_path)
    _until(lambda: len(_run_processes(process.pid)) == 2, process)  # they may still be importing torch
    runs = _run_processes(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the whole group
    assert _ended(process, runs) == (130, [f"error: stopped by SIGINT: {BOTH_STOPPED}. {CONTINUE}"])


@pytest.mark.subprocess
@pytest.mark.timeout(600)
def test_runs_die_with_a_benchmark_killed_by_sigkill(tiny_root, tmp_path):
    process = _benchmark(tiny_root, tmp_path)
    logs = [tmp_path / folder / "train.log-*" for folder in RUNS.values()]
    _until(lambda: all(glob.glob(str(log)) for log in logs), process)  # each run has started training
    runs = _run_processes(process.pid)
    process.kill()  # no handler runs: the kernel has to stop the runs
    process.wait()
    deadline = time.monotonic() + 30
    while [pid for pid in runs if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(runs) == 2 and not [pid for pid in runs if _alive(pid)]
