"""One full stage-3 training step: the authors' code (Qi5Lei/CLIP-FGDI) against this engine.

Both models hold the same weights (the parity fixtures' seeded ViT-B/16 state dict, 10 identities,
4 domains, 224x224) and see the same batch. A step is everything a stage-3 iteration does:
the authors' re-encode the batch's identity and domain prompts (eval, no grad), then forward,
ID + triplet + i2t + domain-guidance loss, backward and their Adam step (one parameter group per
tensor, as their `make_optimizer_for_IE` builds it); this engine reads the prompt features it
encoded once. Their step with the prompt features cached shows what is left once that is
fixed; each of our step's speed-ups undone, and further candidates, are timed too. Steps of all of them alternate,
so each sees the same machine load; fp32 and bf16 autocast (the authors' AMP, on CPU).

The authors' code is read from a checkout or bare git directory (default: the mirror below) into a
temporary folder at run time, with its hard-wired ``.cuda()`` calls removed so that it runs on CPU.
Their CLIP is built in float32 as theirs ends up (their ``convert_weights`` casts to float32).
Without their code or the parity fixtures, the authors' steps are skipped (said so) and ours are
timed against each other. ``--tiny`` times ours on fgdi_tiny at 64x32 (the authors' model is
ViT-B/16: skipped), batch 8, one step, fp32: seconds (the test suite runs it so).

    python scripts/benchmarks/stage3_vs_authors.py [--authors DIR] [--steps 3] [--batch 8] [--compile] [--tiny]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from _common import stage3_datamanager, timed_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from torchreid_fgdi.config import RunSettings, load_config
from torchreid_fgdi.engine import ImageFGDIEngine
from torchreid_fgdi.engine.precision import autocast
from torchreid_fgdi.models import build_fgdi, from_authors_state_dict, image_encoder

MIRROR = Path("/work/.mirror/Qi5Lei+CLIP-FGDI/repo")
FIXTURES = Path("/work/shared/fixtures")
NUM_IDS, NUM_DOMAINS = 10, 4  # the fixtures' model
AUTHORS_FILES = (
    "models/CLIP.py",
    "models/clip/__init__.py",
    "models/clip/clip.py",
    "models/clip/model.py",
    "models/clip/simple_tokenizer.py",
    "models/clip/bpe_simple_vocab_16e6.txt.gz",
    "loss/__init__.py",
    "loss/make_loss.py",
    "loss/triplet_loss.py",
    "loss/apn_loss.py",
    "loss/center_loss.py",
    "loss/softmax_loss.py",
    "loss/arcface.py",
    "loss/contrastive_loss.py",
    "solver/make_optimizer_prompt.py",
)


def _read(source: Path, name: str) -> bytes:
    if (source / name).is_file():
        return (source / name).read_bytes()
    return subprocess.run(["git", "-C", str(source), "show", f"HEAD:{name}"], capture_output=True, check=True).stdout


def import_authors(source: Path, folder: Path):
    """Their model, loss and optimizer modules, as package ``authors_fgdi`` under `folder`."""
    package = folder / "authors_fgdi"
    for name in AUTHORS_FILES:
        data = _read(source, name)
        if name.endswith(".py"):
            data = data.replace(b".cuda()", b"").replace(b'clip_model.to("cuda")', b"clip_model")
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_bytes(data)
    for sub in ("", "models", "solver"):  # theirs import models and solvers this step does not use
        (package / sub / "__init__.py").write_bytes(b"")
    sys.path.insert(0, str(folder))
    clip_module = importlib.import_module("authors_fgdi.models.CLIP")
    return SimpleNamespace(
        CLIP=clip_module,
        clip_model=importlib.import_module("authors_fgdi.models.clip.model"),
        make_loss=importlib.import_module("authors_fgdi.loss").make_loss,
        optimizer=importlib.import_module("authors_fgdi.solver.make_optimizer_prompt").make_optimizer_for_IE,
    )


def fixture_state() -> dict:
    spec = importlib.util.spec_from_file_location("authors_weights", FIXTURES / "authors_weights.py")
    weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weights)
    return weights.make_state_dict(str(FIXTURES / "authors_fgdi_vitb16_keys.json"), seed=0)


def authors_model(authors, state: dict) -> torch.nn.Module:
    """Their `Model` for ViT-B/16 at 224, its CLIP built in float32 on CPU (no download, no fp16)."""
    authors.CLIP.load_clip_to_cpu = lambda name, h, w, stride: authors.clip_model.CLIP(
        512, 224, 12, 768, 16, stride, 77, 49408, 512, 8, 12, h, w
    )
    args = SimpleNamespace(size_train=(224, 224), backbone="ViT-B-16", image_encoder_lr=5e-6, optimizer="Adam")
    model = authors.CLIP.Model(NUM_IDS, args, domain_num=NUM_DOMAINS)
    model.load_state_dict(state)
    return model, args


def authors_step(authors, state: dict, reencode: bool = True) -> Callable:
    """`train_stage2`'s loop body on CPU; `precision` bf16 autocasts what their AMP covers. Their
    prompt features of every identity are encoded once before the stage, as they do; without
    `reencode`, the batch's identity and domain prompt features are too (what is left of their step
    once the constant prompts are cached)."""
    model, args = authors_model(authors, state)
    criterion, optimizer = authors.make_loss(NUM_IDS), authors.optimizer(model, args)
    model.eval()
    with torch.no_grad():
        text_features, _ = model(label=torch.arange(NUM_IDS), get_text=True)
    cached = {}

    def prompts(target: torch.Tensor, domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            text_p, _ = model(label=target, get_text=True, domain=domain, getdomain=False)
            text_n, _ = model(label=target, get_text=True, domain=domain, getdomain=True)
        model.train()
        return text_p, text_n

    def step(batch: dict, precision: str) -> None:
        img, target, domain = batch["img"], batch["pid"], batch["dsetid"]
        optimizer.zero_grad()
        if reencode:
            text_p, text_n = prompts(target, domain)
        else:
            if "prompts" not in cached:
                cached["prompts"] = prompts(target, domain)
            text_p, text_n = cached["prompts"]
        with autocast(precision, torch.device("cpu")):
            score, feat, image_features = model(x=img, label=target)
            logits = image_features @ text_features.t()
            loss = criterion(score, feat, target, logits, image_features, text_p.detach(), text_n.detach(), beta=0.1)
        loss.backward()
        optimizer.step()

    return step


def our_engine(state: dict | None, precision: str, variant: str = "fgdi") -> ImageFGDIEngine:
    """Ours with the authors' weights (`state`), or random ones when there are none."""
    datamanager = stage3_datamanager(NUM_IDS, NUM_DOMAINS)
    model = build_fgdi(variant, NUM_IDS, num_domains=NUM_DOMAINS, pretrained=False)
    if state is not None:
        model.load_state_dict(from_authors_state_dict(state))
    settings = RunSettings.from_config(load_config(opts=["fgdi.precision", precision])).fgdi
    engine = ImageFGDIEngine(datamanager, model, settings=settings, use_gpu=False)
    engine.enter("stage3")
    engine.model.train()
    return engine


def our_candidates(engine: ImageFGDIEngine, compile_tower: bool) -> dict[str, Callable]:
    """Our step as configured, and with each of its speed-ups undone or a further candidate
    switched on, for that step only."""
    model = engine.model
    configured = engine.optimizers["image"]
    groups = [{k: v for k, v in g.items() if k not in ("foreach", "fused")} for g in configured.param_groups]

    def with_optimizer(**kind) -> Callable:
        optimizer = torch.optim.Adam([dict(g) for g in groups], **kind)

        def step(batch: dict, precision: str) -> None:
            engine.optimizers["image"] = optimizer
            engine.forward_backward(batch)
            engine.optimizers["image"] = configured

        return step

    def ours(batch: dict, precision: str) -> None:
        engine.forward_backward(batch)

    def whole_last_block(batch: dict, precision: str) -> None:
        alone = image_encoder._reads_class_token_alone
        image_encoder._reads_class_token_alone = lambda block: False
        engine.forward_backward(batch)
        image_encoder._reads_class_token_alone = alone

    def math_attention(batch: dict, precision: str) -> None:
        with sdpa_kernel(SDPBackend.MATH):
            engine.forward_backward(batch)

    def channels_last(batch: dict, precision: str) -> None:
        model.to(memory_format=torch.channels_last)
        engine.forward_backward({**batch, "img": batch["img"].contiguous(memory_format=torch.channels_last)})
        model.to(memory_format=torch.contiguous_format)

    def frozen_requiring_grad(batch: dict, precision: str) -> None:
        trained = {param: param.requires_grad for param in model.parameters()}
        for param in trained:
            param.requires_grad_(True)
        engine.forward_backward(batch)
        for param, flag in trained.items():
            param.requires_grad_(flag)

    candidates = {
        "ours": ours,
        "ours, Adam unfused (torch's CPU default)": with_optimizer(foreach=False, fused=False),
        "ours, Adam foreach instead of fused": with_optimizer(foreach=True),
        "ours, last block over every token": whole_last_block,
        "ours + channels-last": channels_last,
        "ours + attention by the math kernel": math_attention,
        "ours, frozen towers requiring grad": frozen_requiring_grad,
    }
    if compile_tower:
        eager, compiled = model.image_encoder, torch.compile(model.image_encoder)

        def compiled_step(batch: dict, precision: str) -> None:
            model.image_encoder = compiled
            engine.forward_backward(batch)
            model.image_encoder = eager

        candidates["ours + torch.compile(image tower)"] = compiled_step
    return candidates


def timed(steps: dict[str, Callable], batch: dict, precision: str, rounds: int) -> dict[str, float]:
    """Seconds per step of each, after one warm-up step each; rounds alternate between them."""
    for step in steps.values():
        step(batch, precision)
    total = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, step in steps.items():
            total[name] += timed_call(lambda step=step: step(batch, precision))[0]
    return {name: seconds / rounds for name, seconds in total.items()}


def matmul_floor(step: Callable, batch: dict, precision: str) -> tuple[float, float, float]:
    """(GFLOP of `step`'s matrix products and attention, this machine's GFLOP/s on a ViT-B/16 MLP
    product of the batch's size in `precision`, the seconds those products take at that rate): no
    step doing the same arithmetic runs faster than that here."""
    with FlopCounterMode(display=False) as counter:
        step(batch, precision)
    tokens = len(batch["img"]) * 197
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(tokens, 768, dtype=dtype), torch.randn(768, 3072, dtype=dtype)
    seconds = min(timed_call(lambda: a @ b)[0] for _ in range(5))
    rate = 2 * tokens * 768 * 3072 / seconds / 1e9
    gflop = counter.get_total_flops() / 1e9
    return gflop, rate, gflop / rate


def authors_skipped(args) -> str:
    """Why the authors' steps cannot run here ('' when they can)."""
    if args.tiny:
        return "--tiny: their model is ViT-B/16 at 224"
    if not (args.authors / "models").is_dir() and not (args.authors / "HEAD").is_file():
        return f"their code is not at {args.authors} (pass --authors <checkout or bare git dir of CLIP-FGDI>)"
    if not (FIXTURES / "authors_weights.py").is_file():
        return f"the parity fixtures, which give both models the same weights, are not at {FIXTURES}"
    return ""


def print_times(precision: str, seconds: dict[str, float], reference: str) -> None:
    base = "the authors'" if reference == "authors" else "ours"
    for name, value in seconds.items():
        print(f"{precision} {name:<45} {value:6.2f} s/step  {seconds[reference] / value:5.2f}x {base}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors", type=Path, default=MIRROR, help="checkout or bare git dir of Qi5Lei/CLIP-FGDI")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each, after one warm-up step")
    parser.add_argument("--batch", type=int, default=8, help="images per step (4 per identity)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of our image tower")
    parser.add_argument("--tiny", action="store_true", help="ours on fgdi_tiny, one step: seconds (for the tests)")
    args = parser.parse_args()
    variant, size = ("fgdi_tiny", (64, 32)) if args.tiny else ("fgdi", (224, 224))
    if args.tiny:
        args.steps, args.precisions = 1, ["fp32"]
    skipped = authors_skipped(args)
    if skipped:
        print(f"[authors] their steps are skipped: {skipped}; ours are timed against each other")
    started = time.time()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} at {size[0]}x{size[1]}, "
        f"{variant}"
    )
    with tempfile.TemporaryDirectory() as folder:
        authors = None if skipped else import_authors(args.authors, Path(folder))
        state = None if skipped else fixture_state()
        torch.manual_seed(0)
        pids = torch.arange(args.batch // 4).repeat_interleave(4) * 3 % NUM_IDS
        batch = {"img": torch.randn(args.batch, 3, *size), "pid": pids, "dsetid": pids % NUM_DOMAINS}
        for precision in args.precisions:
            engine = our_engine(state, precision, variant)
            steps = (
                {}
                if skipped
                else {
                    "authors": authors_step(authors, state),
                    "authors, prompt features cached": authors_step(authors, state, reencode=False),
                }
            )
            steps |= our_candidates(engine, args.compile)
            seconds = timed(steps, batch, precision, args.steps)
            gflop, rate, seconds["floor: our products at the machine's rate"] = matmul_floor(
                steps["ours"], batch, precision
            )
            print_times(precision, seconds, "ours" if skipped else "authors")
            print(f"{precision} (floor: {gflop:.0f} GFLOP of matrix products and attention at {rate:.0f} GFLOP/s)")
            del engine, steps
    print(f"took {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
