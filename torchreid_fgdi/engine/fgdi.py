"""The three-stage CLIP-FGDI engine over torchreid's `Engine`."""

from __future__ import annotations

import contextlib
import os.path as osp
import random
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
import torchreid

from .. import atomic
from ..checkpoint_file import CheckpointError, check_finite, read_checkpoint
from ..evaluation import plots
from . import distributed, progress, schedules
from .losses import domain_guidance, id_loss, supcon, triplet_loss
from .run_folder import Progress, check_data
from .run_log import RunLog, latest, read_metrics
from .testing import MultiTargetTestMixin

STAGES = ("stage1", "stage2a", "stage2b", "stage3", "done")
IMAGE_STAGES = ("stage1", "stage3")
_TEXT_CHUNK = 128


class NonFiniteLossError(FloatingPointError):
    """A NaN or Inf loss: training stops before the step is applied."""


class _PromptStep(torch.nn.Module):
    """Stage 2's forward as a module, so DistributedDataParallel can synchronise its gradients."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pids: torch.Tensor, dsetids: torch.Tensor | None, adversarial: bool):
        text = self.model.text_features(pids, dsetids)
        return text, self.model.domain_logits(text, adversarial)


def _default_settings():
    from ..config import get_default_config

    return get_default_config().fgdi


def resolve_precision(precision: str, device: torch.device, key: str = "fgdi.precision") -> str:
    """``auto``: fp16 autocast (with a grad scaler) on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"{key} must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"{key} fp16 needs CUDA; use bf16 or fp32 on CPU")
    return precision


class ImageFGDIEngine(MultiTargetTestMixin, torchreid.engine.Engine):
    """Trains CLIP-FGDI in its stages (docs/method.md) and tests with torchreid's evaluation.

    1. ``stage1``: image encoder, ID + triplet loss.
    2. ``stage2a``: identity prompts and the adversarial domain classifier on image features
       extracted once; ``stage2b``: domain prompts and the plain domain classifier.
    3. ``stage3``: image encoder, ID + triplet + i2t cross-entropy against every identity's text
       feature + domain guidance; the prompt features are constant here, so encoded once.

    Each stage trains exactly its parameters (the others keep ``requires_grad=False``). Stages 1
    and 3 share one Adam and one schedule (as the authors'); each prompt stage has its own.
    Checkpoints (``save_dir/checkpoints``) hold everything ``resume`` needs to continue a
    stopped run exactly, mid-stage included.

    Under ``torchrun`` (several processes) each stage trains through DistributedDataParallel:
    every rank takes its share of each batch, stage-2 features are extracted in shards and
    gathered, stage-3 prompt features are encoded on rank 0 and broadcast, and rank 0 alone
    writes checkpoints and evaluates.

    Args:
        datamanager: a torchreid image data manager whose training items carry ``dsetid``.
        model: an FGDI model (``torchreid.models.build_model('fgdi', ...)``).
        settings: the config's ``fgdi`` section (defaults: the paper's values).
        use_gpu: use CUDA if available.
        plots, plot_queries, evaluator: ``test.plots``, ``test.plot_queries``, ``test.evaluator``.
        config_text: the run's whole config (``cfg.dump()``), recorded in every checkpoint so that
            `inference.FeatureExtractor`, search and export can rebuild the model from it.
        (`config.fgdi_engine_kwargs(cfg)` gives all of these from a config.)
    """

    def __init__(
        self,
        datamanager,
        model,
        settings=None,
        use_gpu: bool = True,
        plots: bool = True,
        plot_queries: int = 4,
        evaluator: str = "fast",
        config_text: str = "",
    ):
        super().__init__(datamanager, use_gpu)
        self.s = settings if settings is not None else _default_settings()
        self.plots, self.plot_queries, self.evaluator = plots, plot_queries, evaluator
        self.device = torch.device("cuda" if self.use_gpu else "cpu")
        self.precision = resolve_precision(self.s.precision, self.device)
        self.test_precision = resolve_precision(self.s.test_precision, self.device, "fgdi.test_precision")
        model.loss = "triplet"  # the steps read (logits, features), whatever torchreid's build_model was given
        if self.s.sync_bn:
            model = self._sync_bnnecks(model)
        self.model = model.to(self.device)
        self._frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        self.optimizers, self.schedulers = self._build_optimizers()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.register_model("model", model, self.optimizers["image"], self.schedulers["image"])
        self.stage, self.stage_epoch, self.image_epoch = STAGES[0], 0, 0
        self._image_cache = None
        self._prompt_order = None  # fgdi.prompt.reshuffle False: the stage's one order of the cached features
        self._text_cache = None
        self._resume_rng = None
        self._ddp = None
        self.last_rank1 = 0.0
        self.epoch_step = 0
        self.run_log = RunLog("")
        self.config_text = config_text
        self.data_fingerprint = getattr(datamanager, "fingerprint", lambda: None)()
        # Checkpoint files a complete epoch with finite losses has trained from, oldest first, and those
        # written since (which may hold weights already on their way to a NaN).
        self._confirmed: list[str] = []
        self._unconfirmed: list[str] = []
        self._trained_from: list[str] = []  # the unconfirmed ones the current epoch started from
        self._bar = None
        self._epoch_meter = torchreid.utils.MetricMeter()

    def _sync_bnnecks(self, model: torch.nn.Module) -> torch.nn.Module:
        """BNNecks as SyncBatchNorm (same parameters and state-dict keys). PyTorch synchronises
        batch statistics only on GPUs, so several CPU processes are refused."""
        if distributed.world_size() > 1 and self.device.type != "cuda":
            raise ValueError("fgdi.sync_bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on CPU processes")
        for name in ("bottleneck", "bottleneck_proj"):
            setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(getattr(model, name)))
        return model

    # ---- parameters and optimizers -------------------------------------------------------
    def _params(self, stage: str) -> dict[str, torch.nn.Parameter]:
        if stage in IMAGE_STAGES:
            prefixes = ("image_encoder.", "bottleneck", "classifier", "cv_embed")
        elif stage == "stage2a":
            prefixes = ("promptlearner.clsctx", "dcgrl.")
        elif stage == "stage2b":
            prefixes = ("promptlearner.dmctx", "dc.")
        else:
            prefixes = ()
        return {n: p for n, p in self.model.named_parameters() if n.startswith(prefixes) and n not in self._frozen}

    def _build_optimizers(self):
        s = self.s
        image = self._params("stage1")
        groups = [
            {"params": [p for n, p in image.items() if "bias" not in n], "lr": s.image.lr},
            {"params": [p for n, p in image.items() if "bias" in n], "lr": s.image.lr * s.image.bias_lr_factor},
        ]
        optimizers = {"image": torch.optim.Adam(groups, weight_decay=s.image.weight_decay)}
        schedulers = {
            "image": schedules.image_scheduler(
                optimizers["image"], s.image.milestones, s.image.gamma, s.image.warmup_factor, s.image.warmup_epochs
            )
        }
        for stage, vectors, classifier in (
            ("stage2a", "promptlearner.clsctx", "dcgrl."),
            ("stage2b", "promptlearner.dmctx", "dc."),
        ):
            params = self._params(stage)
            groups = [
                {"params": [params[vectors]], "lr": s.prompt.lr},
                {"params": [p for n, p in params.items() if n.startswith(classifier)], "lr": s.prompt.classifier_lr},
            ]
            optimizers[stage] = torch.optim.Adam(groups, weight_decay=s.prompt.weight_decay)
            schedulers[stage] = schedules.prompt_scheduler(
                optimizers[stage], self._epochs(stage), s.prompt.warmup_epochs, s.prompt.warmup_lr, s.prompt.min_lr
            )
        return optimizers, schedulers

    def _epochs(self, stage: str) -> int:
        return int(getattr(self.s, f"{stage}_epochs", 0))

    def _enter(self, stage: str) -> None:
        """Leaves only `stage`'s parameters trainable and builds what the stage reads once.

        The random generators are left as found: a DataLoader draws its seed from them even when
        it does not shuffle, and a run resumed at a stage boundary rebuilds the caches only after
        restoring the checkpoint's generators, so the stage must start from the same state either way.
        """
        self._set_trainable(stage)
        if self.stage_epoch == 0:
            self._prompt_order = None
        with rng_preserved():
            if stage in ("stage2a", "stage2b") and self._image_cache is None:
                self._image_cache = self.extract_image_features()
            if stage == "stage3":
                self._text_cache = self.encode_prompts()
        self._ddp = None
        if distributed.world_size() > 1 and stage in STAGES[:-1]:
            module = self.model if stage in IMAGE_STAGES else _PromptStep(self.model)
            device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self._ddp = torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def _set_trainable(self, stage: str) -> None:
        """``requires_grad`` on `stage`'s parameters alone, so frozen ones do not even get a gradient."""
        trainable = set(self._params(stage))
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in trainable)

    def two_stepped_transfer_learning(self, epoch, fixbase_epoch, open_layers, model=None) -> None:
        """torchreid's `Engine.train` calls this every epoch to open every layer; the stage decides instead."""
        self._set_trainable(self.stage)

    def _autocast(self, precision: str | None = None):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision or self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def extract_features(self, input: torch.Tensor) -> torch.Tensor:
        """Test features under ``fgdi.test_precision``, returned in float32."""
        with self._autocast(self.test_precision):
            return self.model(input).float()

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, terms: dict) -> None:
        self.epoch_step += 1
        self._check_finite(loss, terms)
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def _check_finite(self, loss: torch.Tensor, terms: dict) -> None:
        """Stops on a NaN / Inf loss (on any rank) before anything of the step is applied, so the
        weights and the last checkpoint stay those of the last good step."""
        finite = bool(torch.isfinite(loss.detach()).all())
        if distributed.all_true(finite, self.device):
            return
        values = ", ".join(f"{k} {v.item():.6g}" for k, v in {"loss": loss, **terms}.items())
        values += " (finite here, not on another process)" if finite else ""
        raise NonFiniteLossError(
            f"non-finite loss in {self.stage}, epoch {self.stage_epoch + 1}/{self._epochs(self.stage)}, "
            f"step {self.epoch_step} of the epoch: {values}. Nothing of this step was applied; "
            f"{self._good_checkpoint_advice()} Usual causes: a learning rate too high for the batch "
            "(fgdi.image.lr / fgdi.prompt.lr), fp16 overflow (try fgdi.precision bf16 or fp32), or a bad image."
        )

    def _good_checkpoint_advice(self) -> str:
        """Which checkpoint to resume from: only one that a complete epoch with finite losses has
        trained from is known to be good; a newer one may already hold diverging weights."""
        doubtful = [p for p in dict.fromkeys(self._trained_from + self._unconfirmed) if osp.isfile(p)]
        doubt = (
            f" Not {', '.join(doubtful)}: no complete epoch has trained from it, so it may already hold the "
            "damage (resuming it with a lower rate may work, but it is not known to be good)."
            if doubtful
            else ""
        )
        good = [p for p in self._confirmed if osp.isfile(p)]
        if not good:
            return f"no checkpoint is known to be good: start afresh with a lower learning rate.{doubt}"
        return (
            f"the newest checkpoint known to be good is {good[-1]}: continue with model.resume {good[-1]} and, "
            f"e.g., a lower learning rate (the new rate applies to the rest of the run).{doubt}"
        )

    # ---- what stages 2 and 3 compute once ------------------------------------------------
    @torch.no_grad()
    def extract_image_features(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected image features (CLS of xproj) of every training image, un-augmented."""
        loader = getattr(self.datamanager, "train_loader_test", None)
        if loader is None:
            raise TypeError("stage 2 reads every training image once: use torchreid_fgdi.data.DomainImageDataManager")
        self.model.eval()
        shard = list(range(distributed.rank(), len(loader.dataset), distributed.world_size()))
        if distributed.world_size() > 1:
            loader = torch.utils.data.DataLoader(
                torch.utils.data.Subset(loader.dataset, shard),
                batch_size=loader.batch_size,
                num_workers=loader.num_workers,
                pin_memory=loader.pin_memory,
            )
        feats, pids, dsetids = [], [], []
        for data in progress.track(loader, "stage2 features"):
            with self._autocast():
                _, _, xproj = self.model.image_encoder(data["img"].to(self.device))
            feats.append(xproj.float().cpu())
            pids.append(data["pid"])
            dsetids.append(data["dsetid"])
        rows = {"feats": torch.cat(feats), "pids": torch.cat(pids), "dsetids": torch.cat(dsetids)}
        rows = distributed.gather_in_order(rows, shard)
        return rows["feats"].to(self.device), rows["pids"].to(self.device), rows["dsetids"].to(self.device)

    def pid_domains(self) -> torch.Tensor:
        """The source domain of every classifier row (rows past the identities, see ``fgdi.num_classes``: 0)."""
        domains = torch.zeros(self.model.classifier.out_features, dtype=torch.long)
        for _, pid, _, dsetid in self.datamanager.train_loader.dataset.train:
            domains[pid] = dsetid
        return domains

    @torch.no_grad()
    def encode_prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity-prompt and domain-prompt text features of every classifier row (constant in stage 3)."""
        self.model.eval()
        pids = torch.arange(self.model.classifier.out_features, device=self.device)
        if not distributed.is_main():
            dim = self.model.text_encoder.text_projection.shape[1]
            empty = torch.empty(len(pids), dim, device=self.device)
            return distributed.broadcast_tensors((empty, empty.clone()))
        domains = self.pid_domains().to(self.device)
        invariant = torch.cat([self.model.text_features(c) for c in pids.split(_TEXT_CHUNK)])
        relevant = torch.cat([self.model.text_features(c, domains[c]) for c in pids.split(_TEXT_CHUNK)])
        return distributed.broadcast_tensors((invariant.float(), relevant.float()))

    # ---- training steps ------------------------------------------------------------------
    def forward_backward(self, data: dict) -> dict:
        s = self.s
        imgs, pids = data["img"].to(self.device), data["pid"].to(self.device)
        with self._autocast():
            scores, feats = (self._ddp or self.model)(imgs)
        *batch_feats, batch_pids = distributed.gather_batch(*feats, pids)
        terms = {"id": id_loss(scores, pids, s.label_smooth), "triplet": triplet_loss(batch_feats, batch_pids)}
        loss = s.id_weight * terms["id"] + s.triplet_weight * terms["triplet"]
        if self.stage == "stage3":
            invariant, relevant = self._text_cache
            xproj = feats[2].float()
            terms["i2t"] = id_loss([xproj @ invariant.t()], pids, s.label_smooth)
            terms["guide"] = domain_guidance(xproj, invariant[pids], relevant[pids], s.guide_direction)
            loss = loss + (1 - s.beta) * terms["i2t"] + s.beta * terms["guide"]
        self._step(self.optimizers["image"], loss, terms)
        summary = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        summary["acc"] = (scores[0].argmax(1) == pids).float().mean().item()
        self._epoch_meter.update(summary)
        return summary

    def train_prompts(self, stage: str) -> dict:
        """One stage-2 epoch over the cached image features: in a fresh random order, or (``fgdi.prompt.
        reshuffle`` False, the authors' way) in chunks of one order drawn when the stage starts."""
        s, adversarial = self.s.prompt, stage == "stage2a"
        feats, pids, dsetids = self._image_cache
        self.model.train()
        batch = min(s.batch_size, len(pids))
        keep_order = not s.reshuffle
        order = self._prompt_order if keep_order and self._prompt_order is not None else torch.randperm(len(pids))
        if keep_order:
            self._prompt_order = order
        order = order.to(self.device)
        meters = torchreid.utils.MetricMeter()
        for start in range(0, len(pids) - batch + 1, batch):
            idx = order[start : start + batch][distributed.rank() :: distributed.world_size()]
            img, pid, dom = feats[idx], pids[idx], dsetids[idx]
            with self._autocast():
                text, logits = (self._ddp or _PromptStep(self.model))(pid, None if adversarial else dom, adversarial)
            all_img, all_text, all_pid = distributed.gather_batch(img, text, pid)
            terms = {
                "i2t": supcon(all_img, all_text, all_pid, all_pid, s.temperature),
                "t2i": supcon(all_text, all_img, all_pid, all_pid, s.temperature),
                "domain": F.cross_entropy(logits.float(), dom),
            }
            loss = terms["i2t"] + terms["t2i"] + s.omega * terms["domain"]
            self._step(self.optimizers[stage], loss, terms)
            meters.update({"loss": loss.item(), **{k: v.item() for k, v in terms.items()}})
            meters.update({"domain_acc": (logits.argmax(1) == dom).float().mean().item()})
        self.schedulers[stage].step()
        return {name: meter.avg for name, meter in meters.meters.items()}

    # ---- the run -------------------------------------------------------------------------
    def run(
        self,
        save_dir: str = "log",
        print_freq: int = 10,
        eval_freq: int = -1,
        test_only: bool = False,
        dist_metric: str = "euclidean",
        normalize_feature: bool = False,
        visrank: bool = False,
        visrank_topk: int = 10,
        use_metric_cuhk03: bool = False,
        ranks=(1, 5, 10, 20),
        rerank: bool = False,
    ) -> None:
        """Runs the stages from where the engine stands (the start, or a resumed checkpoint), then tests.

        ``eval_freq`` > 0 also tests every that many stage-3 epochs.
        """
        test_kwargs = {
            "dist_metric": dist_metric,
            "normalize_feature": normalize_feature,
            "visrank": visrank,
            "visrank_topk": visrank_topk,
            "save_dir": save_dir,
            "use_metric_cuhk03": use_metric_cuhk03,
            "ranks": list(ranks),
            "rerank": rerank,
        }
        if test_only:
            self._test(test_kwargs)
            return
        if self.writer is None and distributed.is_main():
            self.writer = torch.utils.tensorboard.SummaryWriter(log_dir=save_dir)
        self.run_log = RunLog(save_dir, self.writer)
        if self.stage == STAGES[0] and self.stage_epoch == 0 and self._resume_rng is None:
            self.run_log.start()  # a new run in this save_dir: earlier runs' curves would mix in
        self.max_epoch = self._epochs("stage1") + self._epochs("stage3")
        started = time.time()
        while self.stage != "done":
            self._enter(self.stage)
            if self._resume_rng is not None:
                set_rng_state(self._resume_rng)
                self._resume_rng = None
            if self.stage == "stage3" and self.stage_epoch == 0:
                self._save_domain_features(save_dir, "before stage 3")
            epochs = self._epochs(self.stage)
            batches = len(self.train_loader) if self.stage in IMAGE_STAGES else 1
            unit = "batch" if self.stage in IMAGE_STAGES else "epoch"
            with progress.bar(self.stage, (epochs - self.stage_epoch) * batches, unit) as self._bar:
                while self.stage_epoch < epochs:
                    self._train_epoch(print_freq)
                    self.stage_epoch += 1
                    finished = self.stage_epoch == epochs
                    if self.stage == "stage3" and eval_freq > 0 and self.stage_epoch % eval_freq == 0 and not finished:
                        self._test(test_kwargs)
                    if self.stage_epoch % max(self.s.checkpoint_every, 1) == 0 and not finished:
                        self.save_checkpoint(save_dir)
            self._bar = None
            completed = self.stage
            self.stage, self.stage_epoch = STAGES[STAGES.index(self.stage) + 1], 0
            self.save_checkpoint(save_dir, completed)
        if not distributed.replicas_agree(self.model):
            raise RuntimeError("the processes' weights diverged during distributed training")
        print(f"=> Trained all stages in {time.time() - started:.0f} s; final test")
        self._test(test_kwargs)
        self.save_checkpoint(save_dir, "stage3")
        if distributed.is_main():
            self._save_domain_features(save_dir, "after stage 3")
            if self.plots:
                self.write_plots(save_dir)
            self.writer.close()

    # ---- what a run leaves to look at ----------------------------------------------------
    def domain_features(self, per_domain: int = 150) -> tuple[torch.Tensor, list[str]]:
        """Test features of up to `per_domain` images of every source (training images) and every
        target (query images), with the domain name of each; for the domain-mixing plot."""
        dm, subsets = self.datamanager, []
        train = dm.train_loader_test.dataset
        for d, name in enumerate(dm.sources):
            subsets.append((name, train, [i for i, item in enumerate(dm.train_items) if item[3] == d]))
        for name in dm.targets:
            if name not in dm.sources:
                query = dm.test_loader[name]["query"].dataset
                subsets.append((name, query, list(range(len(query)))))
        self.model.eval()
        feats, labels = [], []
        for name, dataset, rows in subsets:
            rows = [rows[i] for i in np.linspace(0, len(rows) - 1, min(per_domain, len(rows))).round().astype(int)]
            loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, rows), batch_size=dm.batch_size_test)
            with torch.no_grad():
                feats += [self.extract_features(batch["img"].to(self.device)).cpu() for batch in loader]
            labels += [name] * len(rows)
        return torch.cat(feats), labels

    def _save_domain_features(self, save_dir: str, title: str) -> None:
        if not (self.plots and distributed.is_main()):
            return
        with rng_preserved():
            feats, labels = self.domain_features()
        atomic.save({"features": feats, "domains": labels}, _domain_features_path(save_dir, title))

    def write_plots(self, save_dir: str) -> list[str]:
        """save_dir/plots: losses.png (per stage) and domains.png (PCA before / after stage 3), next
        to the CMC curves and ranked queries the test wrote."""
        folder = osp.join(save_dir, "plots")
        rows = read_metrics(save_dir)
        written = [plots.plot_losses({s: latest(rows, s) for s in STAGES[:-1]}, osp.join(folder, "losses.png"))]
        panels = {}
        for title in ("before stage 3", "after stage 3"):
            path = _domain_features_path(save_dir, title)
            if osp.isfile(path):
                saved = torch.load(path, weights_only=True)
                panels[title] = (saved["features"], saved["domains"])
        written.append(plots.plot_domains(panels, osp.join(folder, "domains.png")))
        return [path for path in written if path]

    def _test(self, test_kwargs: dict) -> None:
        """Rank 0 evaluates; the other ranks wait for it."""
        if distributed.is_main():
            self.last_rank1 = self.test(**test_kwargs)
        distributed.barrier()

    def _train_epoch(self, print_freq: int) -> None:
        """One epoch of the current stage; its averages (every loss term, accuracy, lr) go to the run log."""
        self.epoch_step = 0
        done = self.stage_epoch + 1
        self._trained_from, self._unconfirmed = self._unconfirmed, []
        if self.stage in IMAGE_STAGES:
            self.epoch = self.image_epoch
            lr = self.optimizers["image"].param_groups[0]["lr"]
            if hasattr(self.train_loader.sampler, "set_epoch"):
                self.train_loader.sampler.set_epoch(self.image_epoch)
            print(f"=> {self.stage} epoch {done}/{self._epochs(self.stage)}")
            self._epoch_meter = torchreid.utils.MetricMeter()
            loader = self.train_loader
            if self._bar is not None:
                self.train_loader = progress.Counted(loader, self._bar)
            try:
                self.train(print_freq=print_freq)
            finally:
                self.train_loader = loader
            self.image_epoch += 1
            summary = {name: meter.avg for name, meter in self._epoch_meter.meters.items()}
        else:
            lr = self.optimizers[self.stage].param_groups[0]["lr"]
            summary = self.train_prompts(self.stage)
            print(
                f"=> {self.stage} epoch {done}/{self._epochs(self.stage)} "
                + " ".join(f"{k} {v:.4f}" for k, v in summary.items())
                + f" lr {lr:.2e}"
            )
            if self._bar is not None:
                self._bar.update()
        self.run_log.log(self.stage, {**summary, "lr": lr}, done)
        self._confirmed = [p for p in self._confirmed if p not in self._trained_from] + self._trained_from
        self._trained_from = []

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint_state(self, writing=()) -> dict:
        """Everything `resume` needs; `writing`: the files this state is about to replace."""
        return {
            "state_dict": self.model.state_dict(),
            "epoch": self.image_epoch,
            "rank1": float(self.last_rank1),
            "stage": self.stage,
            "stage_epoch": self.stage_epoch,
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": get_rng_state(),
            "confirmed": [osp.basename(p) for p in self._confirmed if p not in writing],
            "saved": time.time(),  # `newest_checkpoint` continues the file written last
            **({"prompt_order": self._prompt_order} if self._prompt_order is not None else {}),
            **({"data": self.data_fingerprint} if self.data_fingerprint else {}),
            **({"config": self.config_text} if self.config_text else {}),
        }

    def save_checkpoint(self, save_dir: str, name: str = "") -> str:
        """Writes ``<name>.pth`` (if named) and then ``latest.pth``, each atomically; the stage file
        first, so a kill between the two leaves a run whose resume writes it again."""
        folder = osp.join(save_dir, "checkpoints")
        latest_path = osp.join(folder, "latest.pth")
        if not distributed.is_main():
            distributed.barrier()
            return latest_path
        paths = [osp.join(folder, f"{name}.pth")] if name else []
        paths.append(latest_path)
        state = self.checkpoint_state(writing=paths)
        atomic.save(state, paths[0])
        if len(paths) > 1:
            atomic.link(paths[0], latest_path)
        self._confirmed = [p for p in self._confirmed if p not in paths]
        self._unconfirmed += paths
        distributed.barrier()
        return latest_path

    def resume(self, path: str) -> dict:
        """Continues from a checkpoint of this engine: model, optimizers, schedules, stage, RNG.
        Returns the checkpoint as read.

        The learning rates are this engine's settings, applied at the checkpoint's point of the
        schedule, so a run resumed with a lower rate (after a NaN, say) really trains at it.
        """
        state = read_checkpoint(path)
        missing = {"stage", "optimizers", "schedulers", "rng"} - set(state)
        if missing:
            raise CheckpointError(
                f"{path} is not an FGDI engine checkpoint (no {', '.join(sorted(missing))}); "
                "to start from its weights use model.load_weights instead of model.resume"
            )
        check_finite(state["state_dict"], path)
        check_data(state.get("data"), self.data_fingerprint, path)
        self.model.load_state_dict(state["state_dict"])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
            schedules.load_keeping_base_lrs(self.schedulers[key], state["schedulers"][key])
        if state["scaler"] and self.scaler.is_enabled():  # empty unless the checkpoint trained in fp16
            self.scaler.load_state_dict(state["scaler"])
        self.stage, self.stage_epoch, self.image_epoch = state["stage"], state["stage_epoch"], state["epoch"]
        self.last_rank1 = state["rank1"]
        self._resume_rng = state["rng"]
        self._prompt_order = state.get("prompt_order")
        folder = osp.dirname(path)
        self._confirmed = [osp.join(folder, n) for n in state.get("confirmed", []) if n != osp.basename(path)]
        self._unconfirmed = [path]
        print(f"=> Resumed from {path}: {self.stage}, epoch {self.stage_epoch} of the stage")
        return state


def continue_from(state: dict, path: str, save_dir: str) -> str:
    """Makes ``save_dir/checkpoints/latest.pth`` a copy of the checkpoint `state` read from `path`,
    stamped as written now, so that ``model.resume auto`` after a kill continues this run, not a
    checkpoint of the folder's earlier course (the diverging one a NaN recovery started over from,
    or stage files of a longer run)."""
    latest_path = osp.join(save_dir, "checkpoints", "latest.pth")
    if osp.abspath(path) != osp.abspath(latest_path):
        atomic.save({**state, "saved": time.time()}, latest_path)
    return latest_path


def checkpoint_progress(state: dict, settings) -> Progress:
    """How far the run of an engine checkpoint got, for checking a resume's changed epochs."""
    at = STAGES.index(state["stage"])
    epochs = {}
    for index, stage in enumerate(STAGES[:-1]):
        if index < at:  # over: every epoch ran
            epochs[f"fgdi.{stage}_epochs"] = (True, int(getattr(settings, f"{stage}_epochs")))
        else:  # under way (its epochs so far) or still to come
            epochs[f"fgdi.{stage}_epochs"] = (False, state["stage_epoch"] if index == at else 0)
    return Progress(finished=state["stage"] == "done", epochs=epochs)


def newest_checkpoint(folder: str) -> str:
    """The checkpoint in `folder` written last (``latest.pth``, or a stage file when a kill came
    between the two), skipping damaged files (each reported), or '' if there is none."""
    found = []
    for name in ("latest.pth", *(f"{s}.pth" for s in STAGES[:-1])):
        path = osp.join(folder, name)
        if not osp.isfile(path):
            continue
        try:
            state = read_checkpoint(path, mmap=True)
            found.append(((state.get("saved", 0.0), STAGES.index(state["stage"]), state["stage_epoch"]), path))
        except (CheckpointError, KeyError, ValueError) as err:
            print(f"=> model.resume auto: skipping {path}: {err}")
    return max(found)[1] if found else ""


def _domain_features_path(save_dir: str, title: str) -> str:
    return osp.join(save_dir, "plots", "features_" + title.replace(" ", "_") + ".pt")


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Leaves every random generator as it was before the block."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def get_rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
