"""The CLIP-FGDI engine: torchreid's `Engine` driven by the stage table (`stages.py`)."""

from __future__ import annotations

import os.path as osp
import time
from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F
import torchreid

from ..errors import ConfigError, NonFiniteLossError
from ..utils.checkpoint import CheckpointError, check_finite, read_checkpoint, write_checkpoint
from ..utils.rng import get_rng_state, rng_preserved, set_rng_state
from . import caches, distributed, progress, schedules
from .checkpointing import KnownGood, check_data, finished_run
from .diagnostics import Diagnostics
from .hooks import DomainFeatures, Hook, PeriodicCheckpoint, PeriodicTest, Plots, StepLog
from .losses import domain_guidance, id_loss, supcon, triplet_loss
from .precision import autocast, resolve_precision
from .run_log import RunLog
from .settings import DEFAULT_TEST, FGDISettings, TestSettings
from .stages import (
    DONE,
    IMAGE,
    LR_GROUPS,
    PROMPT,
    Stage,
    build_optimizers,
    model_table,
    run_epoch,
    trained_by,
    with_epochs,
)
from .testing import MultiTargetTestMixin


class _PromptStep(torch.nn.Module):
    """A prompt stage's forward as a module, so DistributedDataParallel can synchronise its gradients."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pids: torch.Tensor, dsetids: torch.Tensor | None, adversarial: bool | None):
        """The prompts' text features, and the domain classifier's logits (None: `adversarial` None, no classifier)."""
        text = self.model.text_features(pids, dsetids)
        return text, None if adversarial is None else self.model.domain_logits(text, adversarial)


class ImageFGDIEngine(MultiTargetTestMixin, torchreid.engine.Engine):
    """Trains CLIP-FGDI, or CLIP-ReID, stage by stage (docs/method.md) and tests with torchreid's evaluation.

    The stages are rows of a table: the one of the method the model's variant names
    (`stages.model_table`: `stages.FGDI_STAGES` for ``fgdi*``, `stages.CLIP_REID_STAGES` for
    ``clip_reid*``). An epoch (`train`, torchreid's shape) steps and then updates the stage's
    schedule: an image stage calls `forward_backward` per batch (ID + triplet loss, plus the text
    terms in a text-guided stage); a prompt stage runs
    `train_prompts` over image features extracted once. Each stage trains exactly its parameters,
    with the optimizer and schedule its row names (each optimizer registered with torchreid's
    `register_model` under its name). Around the steps, hooks (`hooks.py`) print and log, test,
    write checkpoints and the domain features and plots.
    Checkpoints (``save_dir/checkpoints``) hold everything `resume` needs to continue a stopped
    run exactly, mid-stage included.

    Under ``torchrun`` each stage trains through DistributedDataParallel: every rank takes its
    share of each batch, prompt-stage features are extracted in shards and gathered, the prompt
    features a text-guided stage reads are encoded on rank 0 and broadcast, and rank 0 alone
    writes checkpoints and evaluates. Each step's loss terms and accuracies are averaged over the
    ranks (`distributed.mean_over_ranks`), so the console lines and logs describe the whole batch.

    Args:
        datamanager: `torchreid_fgdi.data.DomainImageDataManager` (training items carry ``dsetid``).
        model: an FGDI model (``torchreid.models.build_model('fgdi', ...)``, or ``'clip_reid'``).
        settings: the config's ``fgdi`` section, typed (`FGDISettings.from_node(cfg.fgdi, ALL_STAGE_NAMES)`).
        test: the config's ``test`` settings every engine's test reads (evaluator, plots...).
        use_gpu: use CUDA if available.
        config_text: the run's whole config (``cfg.dump()``), recorded in every checkpoint so that
            `inference.FeatureExtractor`, search and export can rebuild the model from it.
        table: the stages to run; None: those of the model's method (`stages.model_table` of its variant).

    Examples::

        import torchreid, torchreid_fgdi
        from torchreid_fgdi.config import RunSettings, load_config
        from torchreid_fgdi.data import DomainImageDataManager
        from torchreid_fgdi.engine import ImageFGDIEngine

        cfg = load_config("configs/synthetic/fgdi_tiny.yaml")
        settings = RunSettings.from_config(cfg)
        torchreid.utils.set_random_seed(settings.seed)
        datamanager = DomainImageDataManager(**settings.data)
        model = torchreid.models.build_model(
            cfg.model.name,
            settings.num_classes(datamanager.num_train_pids),
            **settings.model_kwargs(datamanager.num_train_domains),
        )
        engine = ImageFGDIEngine(datamanager, model, settings.fgdi, settings.test, config_text=settings.config_text)
        engine.run(**settings.run)
    """

    def __init__(
        self,
        datamanager: torchreid.data.ImageDataManager,
        model: torch.nn.Module,
        settings: FGDISettings,
        test: TestSettings = DEFAULT_TEST,
        use_gpu: bool | None = None,
        config_text: str = "",
        table: tuple[Stage, ...] | None = None,
    ):
        # None: as the data manager was built (its use_gpu), so a config's use_gpu False holds in a recipe too
        super().__init__(datamanager, datamanager.use_gpu if use_gpu is None else use_gpu)
        self.settings = settings
        self.stages = with_epochs(table or model_table(getattr(model, "variant", None)), settings.epochs)
        self.test_settings = test
        self.config_text = config_text
        self.device = torch.device("cuda" if self.use_gpu else "cpu")
        self.precision = resolve_precision(settings.precision, self.device)
        self.test_precision = resolve_precision(settings.test_precision, self.device, "fgdi.test_precision")
        model.loss = "triplet"  # the steps read (logits, features), whatever torchreid's build_model was given
        if not any(stage.kind == IMAGE for stage in self.stages):
            raise ConfigError("a stage table needs an image stage: it trains the features the test ranks by")
        if settings.sync_bn:
            model = _sync_bnnecks(model, self.device)
        if settings.grad_checkpointing:
            model.image_encoder.set_grad_checkpointing()
        self.model = model.to(self.device)
        self._frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        self.optimizers, self.schedulers = build_optimizers(self.model, self.stages, settings, self._frozen)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        for name, optimizer in self.optimizers.items():  # `update_lr([name])` steps a stage's schedule
            self.register_model(name, self.model, optimizer, self.schedulers[name])
        self.stage, self.stage_epoch, self.image_epoch = self.stages[0].name, 0, 0
        self.max_epoch = sum(stage.epochs for stage in self.stages if stage.kind == IMAGE)
        self._image_cache = None
        self._prompt_order = None  # fgdi.prompt.reshuffle False: the stage's one order of the cached features
        self._text_cache = None
        self._resume_rng = None
        self._ddp = None
        self.hooks: list[Hook] = []  # `run` sets the run's (`default_hooks`)
        self.bar = None  # the current stage's progress bar, while it trains
        self.last_rank1 = 0.0
        self.epoch_step = 0
        self.run_log = RunLog("")
        self.stage_start: dict[str, torch.Tensor] = {}  # a prompt stage's parameters at its start (diagnostics)
        self.known_good = KnownGood()
        self.data_fingerprint = getattr(datamanager, "fingerprint", lambda: None)()

    # ---- where the run stands ------------------------------------------------------------
    def stage_row(self, name: str | None = None) -> Stage:
        """The table's row of stage `name` (default: the current stage)."""
        name = name or self.stage
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r} in this engine's table ({', '.join(s.name for s in self.stages)})")

    def _next_stage(self) -> str:
        names = [stage.name for stage in self.stages]
        at = names.index(self.stage) + 1
        return names[at] if at < len(names) else DONE

    def trained_parameters(self, name: str) -> dict[str, torch.nn.Parameter]:
        return trained_by(self.model, self.stage_row(name).trains, self._frozen)

    def enter(self, name: str) -> None:
        """Makes `name` the current stage: only its parameters trainable, and what it reads once built.

        The random generators are left as found: a DataLoader draws its seed from them even when
        it does not shuffle, and a run resumed at a stage boundary rebuilds the caches only after
        restoring the checkpoint's generators, so the stage must start from the same state either way.
        """
        stage = self.stage_row(name)
        self.stage = name
        self._set_trainable(stage)
        if self.stage_epoch == 0:
            self._prompt_order = None
        with rng_preserved():
            if stage.kind == PROMPT and self._image_cache is None:
                loader = getattr(self.datamanager, "train_loader_test", None)
                if loader is None:
                    raise TypeError("prompt stages read every training image once: use DomainImageDataManager")
                self._image_cache = caches.image_features(self.model, loader, self.device, self.precision)
            if stage.text_guided:
                self._text_cache = self.prompt_features()
        self._ddp = None
        if distributed.world_size() > 1:
            module = self.model if stage.kind == IMAGE else _PromptStep(self.model)
            device_ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self._ddp = torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)

    def prompt_features(self) -> tuple[torch.Tensor, ...]:
        """Every identity's identity-prompt and domain-prompt text features, as the model stands
        (what a text-guided stage reads, and what the diagnostics measure)."""
        rows = caches.row_dsetids(self.train_loader.dataset.train, self.model.classifier.out_features)
        return caches.prompt_features(self.model, rows, self.device)

    def _set_trainable(self, stage: Stage) -> None:
        """``requires_grad`` on `stage`'s parameters alone, so frozen ones do not even get a gradient."""
        trainable = set(trained_by(self.model, stage.trains, self._frozen))
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in trainable)

    def get_current_lr(self, names=None) -> float:
        """The current stage's configured rate (its optimizer's first group), as the logs show it;
        torchreid's reads the last group, in an image stage the biases' doubled rate."""
        return self.optimizers[self.stage_row().optimizer].param_groups[0]["lr"]

    def rates(self, stage: Stage) -> str:
        """'lr 1.00e-03 (bias 2.00e-03)': every group's current rate of `stage`'s optimizer, labelled."""
        groups = self.optimizers[stage.optimizer].param_groups
        first, *others = (f"{label} {group['lr']:.2e}" for label, group in zip(LR_GROUPS[stage.kind], groups))
        return first + (f" ({', '.join(others)})" if others else "")

    def extract_features(self, input: torch.Tensor) -> torch.Tensor:
        """Test features under ``fgdi.test_precision``, returned in float32."""
        with autocast(self.test_precision, self.device):
            return self.model(input).float()

    # ---- the steps -----------------------------------------------------------------------
    def forward_backward(self, data: dict) -> dict:
        """One batch of an image stage: ID + triplet loss, and in a text-guided stage the i2t cross-entropy
        against every identity's text feature: with domain guidance (1 - beta) x i2t + beta x guide, else i2t.
        Returns the loss terms and accuracy of the whole batch (under torchrun, over every rank's share)."""
        s, stage = self.settings, self.stage_row()
        imgs, pids = data["img"].to(self.device), data["pid"].to(self.device)
        with autocast(self.precision, self.device):
            scores, feats = (self._ddp or self.model)(imgs)
        *batch_feats, batch_pids = distributed.gather_batch(*feats, pids)
        terms = {"id": id_loss(scores, pids, s.label_smooth), "triplet": triplet_loss(batch_feats, batch_pids)}
        loss = s.id_weight * terms["id"] + s.triplet_weight * terms["triplet"]
        if stage.text_guided:
            invariant, relevant = self._text_cache
            xproj = feats[2].float()
            terms["i2t"] = id_loss([xproj @ invariant.t()], pids, s.label_smooth)
            if stage.domain_guidance:
                terms["guide"] = domain_guidance(xproj, invariant[pids], relevant[pids], s.guide_direction)
                loss = loss + (1 - s.beta) * terms["i2t"] + s.beta * terms["guide"]
            else:
                loss = loss + terms["i2t"]
        self._step(self.optimizers[stage.optimizer], loss, terms)
        summary = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        summary["acc"] = torchreid.metrics.accuracy(scores[0], pids)[0].item()  # percent, as the baselines
        return distributed.mean_over_ranks(summary, len(pids))

    def train_prompts(self, name: str) -> dict:
        """One epoch of prompt stage `name` over the cached image features: SupCon both ways plus, in a
        stage with a domain classifier, omega x its cross-entropy (through the gradient reversal for
        identity prompts). In a fresh random order per epoch, or (``fgdi.prompt.reshuffle`` False, the
        authors' way) in chunks of one order drawn when the stage starts. Returns the epoch's means.
        The epoch loop (`train`) puts the model in training mode before and steps the schedule after."""
        s, stage = self.settings.prompt, self.stage_row(name)
        feats, pids, dsetids = self._image_cache
        batch = min(s.batch_size, len(pids))
        keep_order = not s.reshuffle
        order = self._prompt_order if keep_order and self._prompt_order is not None else torch.randperm(len(pids))
        if keep_order:
            self._prompt_order = order
        order = order.to(self.device)
        step = self._ddp or _PromptStep(self.model)
        meters = torchreid.utils.MetricMeter()
        for start in range(0, len(pids) - batch + 1, batch):
            idx = order[start : start + batch][distributed.rank() :: distributed.world_size()]
            img, pid, dsetid = feats[idx], pids[idx], dsetids[idx]
            adversarial = not stage.domain_prompts if stage.domain_classifier else None
            with autocast(self.precision, self.device):
                text, logits = step(pid, dsetid if stage.domain_prompts else None, adversarial)
            all_img, all_text, all_pid = distributed.gather_batch(img, text, pid)
            terms = {
                "i2t": supcon(all_img, all_text, all_pid, all_pid, s.temperature),
                "t2i": supcon(all_text, all_img, all_pid, all_pid, s.temperature),
            }
            loss = terms["i2t"] + terms["t2i"]
            if stage.domain_classifier:
                terms["domain"] = F.cross_entropy(logits.float(), dsetid)
                loss = loss + s.omega * terms["domain"]
            self._step(self.optimizers[stage.optimizer], loss, terms)
            summary = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
            if stage.domain_classifier:
                summary["domain_acc"] = torchreid.metrics.accuracy(logits, dsetid)[0].item()
            meters.update(distributed.mean_over_ranks(summary, len(pid)))
        return {name: meter.avg for name, meter in meters.meters.items()}

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
            f"non-finite loss in {self.stage}, epoch {self.stage_epoch + 1}/{self.stage_row().epochs}, "
            f"step {self.epoch_step} of the epoch: {values}. Nothing of this step was applied; "
            f"{self.known_good.advice()} Usual causes: a learning rate too high for the batch "
            "(fgdi.image.lr / fgdi.prompt.lr), fp16 overflow (try fgdi.precision bf16 or fp32), or a bad image."
        )

    # ---- the run -------------------------------------------------------------------------
    def run(
        self,
        save_dir: str = "log",
        max_epoch: int = 0,
        start_epoch: int = 0,
        print_freq: int = 10,
        fixbase_epoch: int = 0,
        open_layers: str | list[str] | None = None,
        start_eval: int = 0,
        eval_freq: int = -1,
        test_only: bool = False,
        dist_metric: str = "euclidean",
        normalize_feature: bool = False,
        visrank: bool = False,
        visrank_topk: int = 10,
        use_metric_cuhk03: bool = False,
        ranks: Sequence[int] = (1, 5, 10, 20),
        rerank: bool = False,
    ) -> None:
        """Runs the stages from where the engine stands (the start, or a resumed checkpoint), then tests.

        torchreid's `Engine.run` signature, so ``engine.run(**settings.run)`` (a `RunSettings`) works; the
        stage table sets the epochs and what trains, so `max_epoch`, `start_epoch`, `fixbase_epoch`
        and `open_layers` are not used (`config.unread_keys` names them when a config sets
        them). `eval_freq` > 0 also tests every that many epochs of the last stage, from `start_eval`.
        What happens around the steps is done by `default_hooks` (see `hooks.py`). A finished run
        (resumed at its end) trains nothing and writes no checkpoint: it only tests again.
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
        if test_only or self.stage == DONE:
            if not test_only:  # a finished run tested again: its results keep the diagnostics
                Diagnostics(save_dir, dist_metric, normalize_feature).after_run(self)
            self.run_test(test_kwargs)
            self.run_log.check_complete()
            return
        self.records_rank1 = True
        try:
            self._train_and_test(save_dir, test_kwargs, print_freq, eval_freq, start_eval)
        finally:
            self.records_rank1 = False

    def _train_and_test(
        self, save_dir: str, test_kwargs: dict, print_freq: int, eval_freq: int, start_eval: int
    ) -> None:
        """The stages left, then the final test (`run` without ``test_only``)."""
        self._open_logs(save_dir)
        self.hooks = self.default_hooks(save_dir, test_kwargs, print_freq, eval_freq, start_eval)
        started = time.time()
        while self.stage != DONE:
            self.train_stage()
        if not distributed.replicas_agree(self.model):
            raise RuntimeError("the processes' weights diverged during distributed training")
        print(f"=> Trained all stages in {time.time() - started:.0f} s; final test")
        self.call_hooks("after_run")
        if self.writer is not None:
            self.writer.close()
        self.run_log.check_complete()  # a full disk, after the results and the last checkpoint

    def default_hooks(
        self, save_dir: str, test_kwargs: dict, print_freq: int, eval_freq: int, start_eval: int
    ) -> list[Hook]:
        """The run's hooks, in the order they act: the console and logs, the domain features and the
        diagnostics that read them (before the final test, which writes them to the results), tests,
        checkpoints (after the test, so they record its Rank-1) and the plots."""
        return [
            StepLog(self, print_freq),
            DomainFeatures(save_dir),
            Diagnostics(save_dir, test_kwargs["dist_metric"], test_kwargs["normalize_feature"]),
            PeriodicTest(test_kwargs, eval_freq, start_eval),
            PeriodicCheckpoint(save_dir, self.settings.checkpoint_every),
            Plots(save_dir),
        ]

    def call_hooks(self, point: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self, *args)

    def _open_logs(self, save_dir: str) -> None:
        """TensorBoard (main process) and ``metrics.jsonl``, emptied when the run starts afresh."""
        if self.writer is None and distributed.is_main():
            self.writer = torch.utils.tensorboard.SummaryWriter(log_dir=save_dir)
        self.run_log = RunLog(save_dir, self.writer)
        if self.stage == self.stages[0].name and self.stage_epoch == 0 and self._resume_rng is None:
            self.run_log.start()  # a new run in this save_dir: earlier runs' curves would mix in

    def train_stage(self) -> None:
        """The current stage's remaining epochs; the engine then stands at the next stage."""
        stage = self.stage_row()
        self.enter(stage.name)
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
            self._resume_rng = None
        self.call_hooks("before_stage", stage)
        batches, unit = (len(self.train_loader), "batch") if stage.kind == IMAGE else (1, "epoch")
        with progress.bar(stage.name, (stage.epochs - self.stage_epoch) * batches, unit) as self.bar:
            while self.stage_epoch < stage.epochs:
                self.train()
        self.bar = None
        self.stage, self.stage_epoch = self._next_stage(), 0
        self.call_hooks("after_stage", stage)

    def train(self) -> None:
        """One epoch of the current stage, in the shape of torchreid's `Engine.train`: the steps
        (`forward_backward` per image batch; a prompt epoch is one `train_prompts`), then `update_lr`
        steps the stage's schedule. What trains is the stage's (`enter`), not torchreid's
        ``fixbase_epoch`` / ``open_layers``; the console lines are a hook's (`hooks.StepLog`)."""
        stage = self.stage_row()
        self.epoch_step = 0
        self.call_hooks("before_epoch", stage)
        if stage.kind == IMAGE:
            self.epoch = self.image_epoch
            if hasattr(self.train_loader.sampler, "set_epoch"):
                self.train_loader.sampler.set_epoch(self.image_epoch)
            steps, step = self.train_loader, self.forward_backward
        else:
            steps, step = [stage.name], self.train_prompts
        self.set_model_mode("train")
        self.num_batches = len(steps)
        for self.batch_idx, data in enumerate(steps):
            self.call_hooks("before_step", stage)
            self.call_hooks("after_step", stage, step(data))
        self.update_lr([stage.optimizer])
        self.stage_epoch += 1
        self.image_epoch += stage.kind == IMAGE
        self.call_hooks("after_epoch", stage)

    def run_test(self, test_kwargs: dict) -> None:
        """Rank 0 evaluates (`test`, its Rank-1 kept for the checkpoints); the other ranks wait for it."""
        if distributed.is_main():
            self.last_rank1 = self.test(**test_kwargs)
        distributed.barrier()

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint_state(self, writing: Collection[str] = ()) -> dict:
        """Everything `resume` needs; `writing`: the files this state is about to replace."""
        return {
            "state_dict": self.model.state_dict(),
            "epoch": run_epoch(self.stages, self.stage, self.stage_epoch),  # torchreid's: the epochs done, all stages'
            "image_epoch": self.image_epoch,
            "rank1": float(self.last_rank1),
            "stage": self.stage,
            "stage_epoch": self.stage_epoch,
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": get_rng_state(),
            "confirmed": self.known_good.names(writing),
            "saved": time.time(),  # `newest_checkpoint` continues the file written last
            **({"prompt_order": self._prompt_order} if self._prompt_order is not None else {}),
            **({"stage_start": self.stage_start} if self.stage_start else {}),
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
        write_checkpoint(self.checkpoint_state(writing=paths), *paths)
        self.known_good.written(paths)
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
        names = [stage.name for stage in self.stages]
        if state["stage"] not in (*names, DONE):
            raise CheckpointError(
                f"{path} is at stage {state['stage']!r}, which this engine's stages ({', '.join(names)}) do not "
                "include: it was written by another method's engine"
            )
        absent = sorted(set(self.optimizers) - set(state["optimizers"]))
        if absent:
            raise CheckpointError(
                f"{path} holds no state for the optimizer(s) {', '.join(absent)} of this engine's stages: "
                "it was written by another method's engine"
            )
        check_finite(state["state_dict"], path)
        check_data(state.get("data"), self.data_fingerprint, path)
        self.model.load_state_dict(state["state_dict"])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
            schedules.load_keeping_base_lrs(self.schedulers[key], state["schedulers"][key])
        if state["scaler"] and self.scaler.is_enabled():  # empty unless the checkpoint trained in fp16
            self.scaler.load_state_dict(state["scaler"])
        self.stage, self.stage_epoch = state["stage"], state["stage_epoch"]
        self.image_epoch = state.get("image_epoch", state["epoch"])  # older files: "epoch" was it
        self.epoch = max(self.image_epoch - 1, 0)  # torchreid's: the last image epoch's index, as `train` left it
        self.last_rank1 = state["rank1"]
        self._resume_rng = state["rng"]
        self._prompt_order = state.get("prompt_order")
        self.stage_start = state.get("stage_start", {})
        self.known_good.restore(path, state.get("confirmed", []))
        total = run_epoch(self.stages, DONE, 0)
        if self.stage == DONE:
            print(finished_run(path, f"every stage trained, {total} epochs"))
        else:
            at = self.stage_row()
            done = run_epoch(self.stages, self.stage, self.stage_epoch)
            print(
                f"=> Resumed from {path}: {done} of the run's {total} epochs done, continuing with {self.stage} "
                f"epoch {self.stage_epoch + 1}/{at.epochs} (run epoch {done + 1}/{total})"
            )
        return state


def _sync_bnnecks(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """BNNecks as SyncBatchNorm (same parameters and state-dict keys). PyTorch synchronises batch
    statistics only on GPUs, so several CPU processes are refused."""
    if distributed.world_size() > 1 and device.type != "cuda":
        raise ConfigError("fgdi.sync_bn needs CUDA devices: PyTorch's SyncBatchNorm does not run on CPU processes")
    for name in ("bottleneck", "bottleneck_proj"):
        setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(getattr(model, name)))
    return model
