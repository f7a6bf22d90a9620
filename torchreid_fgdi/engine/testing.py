"""Multi-target testing for every engine of the plugin."""

from __future__ import annotations

import functools
import json
import os.path as osp

import torch

from ..evaluation import (
    as_stored,
    average_results,
    evaluate_features,
    extract_features,
    format_split_table,
    format_table,
    images_tested,
    plots,
    rank_pictures,
    results_to_json,
    split_summary,
)
from ..evaluation.report import UNSEEN, domains
from ..utils import atomic
from . import diagnostics, progress
from .run_log import RunLog
from .settings import DEFAULT_TEST


class MultiTargetTestMixin:
    """Replaces torchreid's `Engine.test` so that every target's result is kept, not printed only.

    torchreid's `test` returns the Rank-1 of the last target alone; here each target's mAP and CMC
    land in `self.test_results` (and `results.json` / `results.md` in `save_dir`), the average over
    the targets is reported, and `test` returns the mean Rank-1 over the unseen targets (over all
    targets when every target is a source), the number torchreid records as a checkpoint's
    ``rank1``, so `run` and `save_model` work unchanged. Put it before the torchreid engine in the bases.
    """

    test_results: dict
    reranked = False  # the last test's distances were re-ranked (test.rerank): its tables say so
    run_log: RunLog | None = None  # the log of the tests' folder (`_run_log`); the FGDI engine's holds its epochs too
    test_settings = DEFAULT_TEST  # the engine's ``test`` keys (evaluator, re-ranking memory, plots)
    records_rank1 = False  # a training `run` is under way: its checkpoints record what `test` returns
    diagnostics: dict | None = None  # what the text stages did (`diagnostics.measure`), set after a text method's run

    def test(
        self,
        dist_metric="euclidean",
        normalize_feature=False,
        visrank=False,
        visrank_topk=10,
        save_dir="",
        use_metric_cuhk03=False,
        ranks=(1, 5, 10, 20),
        rerank=False,
    ) -> float:
        self.set_model_mode("eval")
        self.test_results, self.reranked = {}, rerank
        run_log = self._run_log(save_dir)
        evaluate = functools.partial(
            self._evaluate_target,
            device=torch.device("cuda" if self.use_gpu else "cpu"),
            dist_metric=dist_metric,
            normalize_feature=normalize_feature,
            rerank=rerank,
            use_metric_cuhk03=use_metric_cuhk03,
            evaluator=self.test_settings.evaluator,
            keep_distmat=visrank,
            rerank_memory_gib=self.test_settings.rerank_memory_gib,
        )
        for name, loaders in self.test_loader.items():
            res, distmat, sizes = self._test_target(name, loaders, evaluate, save_dir, visrank_topk)
            res = self.test_results[name] = as_stored({**res, "images": sizes})
            print(
                f"##### {name}: mAP {res['mAP']:.1%} | "
                + " | ".join(f"Rank-{r} {res['cmc'][r - 1]:.1%}" for r in ranks if r <= len(res["cmc"]))
                + f" ({images_tested(sizes)})"
            )
            if visrank and distmat is not None:
                rank_pictures.save_ranked_queries(
                    distmat,
                    *self.datamanager.fetch_test_loaders(name),
                    osp.join(save_dir, "visrank_" + name),
                    visrank_topk,
                    self.datamanager.height,
                    self.datamanager.width,
                    distance=f"{'re-ranked ' if rerank else ''}{dist_metric} distance",
                )
            cmc = {f"Rank-{r}": res["cmc"][r - 1] for r in ranks if r <= len(res["cmc"])}
            run_log.log(f"test/{name}", {"mAP": res["mAP"], **cmc}, self.epoch)
        return self._report(save_dir, ranks)

    def run(self, *args, test_only: bool = False, **kwargs) -> None:
        """torchreid's `run`; test results its run log could not take end it in one line, after the results."""
        self.records_rank1 = not test_only
        try:
            super().run(*args, test_only=test_only, **kwargs)
        finally:
            self.records_rank1 = False
        if self.run_log is not None:
            self.run_log.check_complete()

    def _run_log(self, save_dir: str) -> RunLog:
        """The engine's log of `save_dir`, kept for `run` to check at the end."""
        if self.run_log is None or self.run_log.path != RunLog(save_dir).path:
            self.run_log = RunLog(save_dir, self.writer)
        return self.run_log

    def _test_target(self, name: str, loaders: dict, evaluate, save_dir: str, visrank_topk: int) -> tuple:
        """(result, distance matrix or None, [(queries, gallery images)] per split) of target `name`:
        on its query and gallery, or the mean over its random splits (``data.test_splits``)."""
        splits = getattr(self.datamanager, "test_split_ids", lambda name: None)(name)
        if splits is not None:
            per_split, sizes = [], []
            for i in splits:
                r, _, q, g = evaluate(self.datamanager.test_split_loaders(name, i), desc=f"{name} split {i}")
                per_split.append(as_stored(r))  # the mean is then the one recomputed from results.json
                sizes.append((len(q[1]), len(g[1])))
            return split_summary(per_split), None, sizes
        res, distmat, query, gallery = evaluate(loaders, desc=name)
        if self.test_settings.plots and save_dir:
            items = self.datamanager.fetch_test_loaders(name)
            plots.visrank_queries(
                (query[0], items[0]),
                (gallery[0], items[1]),
                osp.join(save_dir, "plots", "visrank", name),
                self.test_settings.plot_queries,
                visrank_topk,
                (self.datamanager.height, self.datamanager.width),
                evaluate.keywords["dist_metric"],
                evaluate.keywords["normalize_feature"],
            )
        return res, distmat, [(len(query[1]), len(gallery[1]))]

    def _report(self, save_dir: str, ranks) -> float:
        """Prints and writes (``results.md``, ``results.json``, the CMC plot) the table of every target;
        the mean Rank-1 over the unseen targets (all targets when none is unseen)."""
        table = format_table(self.test_results, self.datamanager.sources, ranks=ranks, reranked=self.reranked)
        table += format_split_table(self.test_results)
        print(table)
        if save_dir:
            if self.test_settings.plots:
                plots.plot_cmc(self.test_results, osp.join(save_dir, "plots", "cmc.png"), self.datamanager.sources)
            found = self.diagnostics
            atomic.write_text(osp.join(save_dir, "results.md"), table + (diagnostics.markdown(found) if found else ""))
            saved = results_to_json(self.test_results, self.datamanager.sources, self.reranked, found)
            atomic.write_text(osp.join(save_dir, "results.json"), json.dumps(saved, indent=1))
        kind = domains(self.test_results, self.datamanager.sources)
        unseen = [n for n in self.test_results if kind[n] == UNSEEN] or list(self.test_results)
        if self.records_rank1:  # an evaluation writes no checkpoint
            print(f"=> Rank-1 recorded in checkpoints (torchreid's 'rank1'): the mean over {', '.join(unseen)}")
        return float(average_results(self.test_results, unseen)["cmc"][0])

    def _evaluate_target(self, loaders: dict, device, desc: str, **kwargs) -> tuple:
        """(result, distance matrix or None, query and gallery (features, pids, camids))."""
        query, gallery = (
            extract_features(progress.track(loaders[s], f"{desc} {s}"), self.extract_features, device, f"{desc} {s}")
            for s in ("query", "gallery")
        )
        res = evaluate_features(query, gallery, where=desc, **kwargs)
        return res, res.pop("distmat"), query, gallery
