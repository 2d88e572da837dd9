"""Run a best-of-n overoptimization scenario end to end, resumably.

Stages (each writes its output under ``out_dir`` and is skipped when that output exists and was
made with the same settings: see bayesrm.scenarios.stages; changed settings stop the run unless
``overwrite=True`` / ``--overwrite``, which redoes the changed stages and everything downstream):

1. prompts      preference-data prompts and best-of-n prompts (disjoint)           prompts.json
2. samples      policy samples for both (on-disk cache, resumes mid-way)           samples/
3. pairs        gold-labelled preference pairs, split by prompt                    pairs.jsonl
4. proxies      train each proxy (or fit Laplace on a trained one), evaluate it    proxies/<name>/
5. scores       gold and every proxy on the N best-of-n samples per prompt         scores/<name>.safetensors
6. curves       E[gold], E[proxy], sigma of best-of-n for each proxy x reward      bon/<proxy>/ and report.md

Proxy rewards are reported in z-units of that proxy (standardised on the best-of-n samples),
so curves of different proxies share one scale.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from bayesrm.config import to_mapping
from bayesrm.data.schema import PreferencePair
from bayesrm.fileio import atomic_write_text
from bayesrm.scenarios.config import ProxyConfig, ScenarioConfig
from bayesrm.scenarios.stages import StageRecords, fingerprint, judge_identity, safe_name
from bayesrm.scenarios.summary import write_summary
from bayesrm.types import RewardPrediction


def judge_fingerprint(judge: Any) -> str:
    """The judge's name, plus a hash of its weights file for a reward-model judge."""
    import hashlib

    name = str(getattr(judge, "name", type(judge).__name__))
    weights = Path(getattr(judge, "path", "")) / "model.safetensors"
    if getattr(judge, "path", None) and weights.is_file():
        name += ":" + hashlib.blake2b(weights.read_bytes(), digest_size=8).hexdigest()
    return name


class BoNRunner:
    """Runs one scenario into ``out_dir``; every stage resumes from what is already there."""

    def __init__(self, config: ScenarioConfig, out_dir: str | Path, progress: bool = True, cache_dir: str | Path | None = None,
                 overwrite: bool = False):
        self.config = config
        for spec in config.proxies:  # proxy names become file names under out_dir: nothing may escape it
            safe_name(spec.name, f"scenario {config.name!r}: proxy name")
        self.out = Path(out_dir)
        self.stages = StageRecords(self.out, overwrite=overwrite)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.out / "samples"
        self.progress = progress
        self.timings: dict[str, float] = {}
        self._sampler = None
        self._notes: list[str] | None = None

    # ---- bookkeeping -----------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; it prints one line when done, with what was logged during it."""
        start = time.perf_counter()
        outer, self._notes = self._notes, []
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.timings[name] = self.timings.get(name, 0.0) + seconds
            notes, self._notes = self._notes, outer
            print(f"[{self.config.name}] {name}: {seconds:.1f} s" + "".join(f"; {n}" for n in notes), flush=True)

    def log(self, message: str) -> None:
        """A note on the current stage's line (or a line of its own outside a stage)."""
        if self._notes is not None:
            self._notes.append(message)
        else:
            print(f"[{self.config.name}] {message}", flush=True)

    # ---- 1. prompts ------------------------------------------------------------------------
    def prompts(self) -> tuple[list[str], list[str]]:
        """(preference-data prompts, best-of-n prompts), disjoint and seeded."""
        saved = self._prompt_sets()
        return saved["train"], saved["bon"]

    def selection_prompts(self) -> list[str]:
        """Penalty-selection prompts (bon.selection_prompts), disjoint from the other two sets."""
        return self._prompt_sets()["select"]

    def _prompt_sets(self) -> dict[str, list[str]]:
        path = self.out / "prompts.json"
        c = self.config
        sizes = {"train": c.preferences.prompts, "bon": c.bon.prompts, "select": c.bon.selection_prompts}
        need = sum(sizes.values())
        settings = {"prompts": to_mapping(c.prompts), "preference_prompts": c.preferences.prompts, "bon_prompts": c.bon.prompts,
                    "selection_prompts": c.bon.selection_prompts}
        _, fresh = self.stages.fresh("prompts", settings, [], [path])
        if fresh:
            saved = json.loads(path.read_text())
            saved.setdefault("select", [])
            return saved
        with self.stage("prompts"):
            if c.prompts.source == "chitchat":
                from bayesrm.data.prompts import chitchat_prompts

                pool = chitchat_prompts(need, seed=c.prompts.seed, min_words=c.prompts.min_words, max_words=c.prompts.max_words)
            else:
                from bayesrm.data.prompts import load_prompts

                files = [c.prompts.source] if isinstance(c.prompts.source, str) else list(c.prompts.source)
                pool = list(dict.fromkeys(p for f in files for p in load_prompts(f, c.prompts.field)))
                if c.prompts.file_max_words is not None:
                    pool = [p for p in pool if len(p.split()) <= c.prompts.file_max_words]
                if len(pool) < need:
                    raise ValueError(f"{c.prompts.source}: {len(pool)} distinct prompts, the scenario needs {need}")
                random.Random(c.prompts.seed).shuffle(pool)
            # train, then select, then bon: without selection prompts the sets are those of earlier versions,
            # and more best-of-n prompts extend the set instead of reshuffling it
            a, b = sizes["train"], sizes["train"] + sizes["select"]
            saved = {"train": pool[:a], "select": pool[a:b], "bon": pool[b:need]}
            atomic_write_text(path, json.dumps(saved, indent=1))
        return saved

    # ---- 2. samples ------------------------------------------------------------------------
    def sampler(self):
        if self._sampler is None:
            from bayesrm.generation.sampler import PolicySampler
            from bayesrm.models.policy import load_policy

            with self.stage("load policy"):
                model, tokenizer = load_policy(self.config.policy)
                self._sampler = PolicySampler(model, tokenizer, self.config.policy, self.config.sampling,
                                              cache_dir=self.cache_dir)
        return self._sampler

    def samples(self, prompts: list[str], n: int, what: str) -> list[list[str]]:
        """n samples per prompt, from the cache where possible."""
        sampler = self.sampler()
        with self.stage(f"sample {what}"):
            out = sampler.sample(prompts, n, progress=self.progress)
            if sampler.stats.samples:
                self.log(f"generated {sampler.stats.samples} samples so far at {sampler.stats.tokens_per_second:.0f} tok/s")
        return out

    # ---- 3. pairs --------------------------------------------------------------------------
    def pairs(self, gold_judge: Any, sign: float = 1.0, tag: str = "") -> tuple[list[PreferencePair], list[PreferencePair]]:
        """Gold-labelled (train, validation) pairs from the preference prompts' samples."""
        from bayesrm.data.loading import load_preferences
        from bayesrm.data.splits import split_pairs
        from bayesrm.scenarios.preferences import gold_labelled_pairs

        c = self.config
        path = self.out / f"pairs{tag}.jsonl"
        train_prompts, _ = self.prompts()
        settings = {"policy": c.policy, "sampling": to_mapping(c.sampling), "samples_per_prompt": c.preferences.samples_per_prompt,
                    "label_temperature": c.preferences.label_temperature, "label_noise": c.preferences.label_noise,
                    "seed": c.seed, "gold": judge_identity(gold_judge), "sign": sign}
        # upstream: the preference prompts themselves, not the whole prompt stage, so that more best-of-n or
        # selection prompts (which extend those sets) leave the pairs and the proxies trained on them fresh
        _, fresh = self.stages.fresh(f"pairs{tag}", settings, [fingerprint({"train_prompts": train_prompts})], [path])
        if not fresh:
            samples = self.samples(train_prompts, c.preferences.samples_per_prompt, "preference data")
            with self.stage("label pairs"):
                flat_p = [p for p, row in zip(train_prompts, samples) for _ in row]
                flat_r = [r for row in samples for r in row]
                gold = (sign * self.judge_scores(gold_judge, flat_p, flat_r).mean).view(len(train_prompts), -1).tolist()
                pairs = gold_labelled_pairs(train_prompts, samples, gold, c.preferences.label_temperature,
                                            c.preferences.label_noise, seed=c.seed)
                lines = [json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) for p in pairs]
                atomic_write_text(path, "\n".join(lines) + "\n")
        pairs = load_preferences(path, format="standard").pairs
        split = split_pairs(pairs, fractions=(1 - c.preferences.validation_fraction, 0.0, c.preferences.validation_fraction),
                            seed=c.seed, by_prompt=True)
        train = list(split.train)
        if c.preferences.max_pairs is not None and c.preferences.max_pairs < len(train):
            train = random.Random(c.seed).sample(train, c.preferences.max_pairs)
        return train, list(split.test)

    def judge_scores(self, judge: Any, prompts: list[str], responses: list[str], chunk: int = 256) -> RewardPrediction:
        """Gold scores of (prompt, response) pairs through a per-text cache beside the samples
        (``<cache_dir>/gold/<judge>.jsonl``, keyed by the judge's fingerprint and each text), so every run,
        seed and stage that shares a sample cache scores a text with an expensive gold only once, and an
        interrupted scoring resumes. Written in chunks of ``chunk`` texts."""
        from bayesrm.generation.cache import slugify, stable_hash

        fp = judge_fingerprint(judge)
        path = self.cache_dir / "gold" / f"{slugify(fp)}.jsonl"
        known: dict[str, float] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    known[rec["key"]] = float(rec["score"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line cut short by a crash: rescored below
        keys = [stable_hash([p, r]) for p, r in zip(prompts, responses)]
        todo, seen = [], set()
        for i, k in enumerate(keys):
            if k not in known and k not in seen:  # one index per distinct text
                seen.add(k)
                todo.append(i)
        if todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            for start in range(0, len(todo), chunk):
                idx = todo[start : start + chunk]
                got = judge.score([prompts[i] for i in idx], [responses[i] for i in idx], batch_size=32, progress=self.progress).mean
                with open(path, "a", encoding="utf-8") as f:
                    f.write("".join(json.dumps({"key": keys[i], "score": float(v)}) + "\n" for i, v in zip(idx, got.tolist())))
                known.update((keys[i], float(v)) for i, v in zip(idx, got.tolist()))
        return RewardPrediction.point(torch.tensor([known[k] for k in keys], dtype=torch.float32))

    # ---- 4. proxies ------------------------------------------------------------------------
    def proxy(self, spec: ProxyConfig, train: list[PreferencePair], valid: list[PreferencePair], tag: str = "") -> Any:
        """A trained (or loaded) proxy scorer, evaluated on the validation pairs."""
        from bayesrm.registry import load_scorer

        c = self.config
        directory = self.out / "proxies" / f"{spec.name}{tag}"
        upstream = [self.stages.fingerprint_of(f"pairs{tag}")]
        if spec.method == "laplace":  # fitted on its base proxy: depends on that stage too
            base_spec = next(p for p in c.proxies if p.name == spec.base)
            self.proxy(base_spec, train, [], tag)
            upstream.append(self.stages.fingerprint_of(f"proxy {base_spec.name}{tag}"))
        settings = {"proxy": to_mapping(spec), "model": to_mapping(c.model), "training": to_mapping(c.training, changed_only=True),
                    "seed": c.seed, "validation_fraction": c.preferences.validation_fraction, "max_pairs": c.preferences.max_pairs}
        _, fresh = self.stages.fresh(f"proxy {spec.name}{tag}", settings, upstream, [directory / "model" / "config.json"],
                                     cleanup=[directory])
        if fresh:
            scorer = load_scorer(directory / "model")
        else:
            with self.stage(f"train proxy {spec.name}{tag}"):
                scorer = self._train_proxy(spec, train, tag)
                scorer.save_pretrained(directory / "model")
        if valid and not (directory / "metrics.json").exists():
            from bayesrm.evaluation.outputs import write_evaluation

            metrics = write_evaluation(scorer, valid, directory, batch_size=64, title=f"proxy {spec.name}: validation pairs",
                                       progress=self.progress)
            self.log(f"{spec.name}{tag}: validation accuracy {metrics['accuracy']:.3f}, ECE {metrics['ece']:.3f}")
        return scorer

    def _train_proxy(self, spec: ProxyConfig, train: list[PreferencePair], tag: str) -> Any:
        from bayesrm.uncertainty.factory import train_model

        c = self.config
        if spec.method == "laplace":
            from bayesrm.uncertainty.laplace.posterior import LaplaceLoRA

            base_spec = next(p for p in c.proxies if p.name == spec.base)
            base = self.proxy(base_spec, train, [], tag)  # already done (see proxy()): loaded from disk
            laplace = LaplaceLoRA(base, **dataclasses.asdict(spec.laplace))
            laplace.fit(train, progress=self.progress)
            if spec.fit_prior:
                self.log(f"{spec.name}{tag}: prior precision {laplace.optimize_prior_precision():.3g} (max. marginal likelihood)")
            return laplace
        training = dataclasses.replace(c.training, seed=c.seed, use_cpu=c.training.use_cpu or not torch.cuda.is_available(),
                                       output_dir=str(self.out / "proxies" / f"{spec.name}{tag}" / "checkpoints"),
                                       disable_tqdm=not self.progress)
        e = spec.ensemble
        return train_model(spec.method, c.model, train, training, members=e.members, diversity=e.diversity,
                           top_layers=e.top_layers, seed=c.seed, bootstrap=e.bootstrap)

    # ---- 5. scores -------------------------------------------------------------------------
    def bon_samples(self, split: str = "bon") -> tuple[list[str], list[str], list[str]]:
        """(prompt ids, flat prompts [P*N], flat responses [P*N]) of the best-of-n (or 'select') samples."""
        prompts = self.prompts()[1] if split == "bon" else self.selection_prompts()
        samples = self.samples(prompts, self.config.bon.n_samples, "best-of-n" if split == "bon" else "penalty selection")
        ids = [str(i) for i, row in enumerate(samples) for _ in row]
        return ids, [p for p, row in zip(prompts, samples) for _ in row], [r for row in samples for r in row]

    def scores(self, name: str, scorer: Any, source: str, split: str = "bon", gold: bool = False) -> RewardPrediction:
        """Scores of the best-of-n (or 'select') samples by ``scorer``, whose stage fingerprint is ``source``."""
        c = self.config
        path = self.out / "scores" / ("" if split == "bon" else split) / f"{name}.safetensors"
        self.prompts()
        settings = {"policy": c.policy, "sampling": to_mapping(c.sampling), "n_samples": c.bon.n_samples, "scorer": name, "split": split}
        stage = f"scores {name}" + ("" if split == "bon" else f" ({split})")
        _, fresh = self.stages.fresh(stage, settings, [self.stages.fingerprint_of("prompts"), source], [path])
        if fresh:
            return RewardPrediction.load(path)
        _, prompts, responses = self.bon_samples(split)
        with self.stage(f"score {name}" + ("" if split == "bon" else f" ({split})")):
            if gold:
                pred = self.judge_scores(scorer, prompts, responses)
            else:
                pred = scorer.score(prompts, responses, batch_size=64, progress=self.progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            pred.save(path)
        return pred

    # ---- 6. curves and report --------------------------------------------------------------
    def curves(self, gold: RewardPrediction, pred: RewardPrediction, prompt_ids: list[str]) -> dict[str, Any]:
        """One BoNCurve per reward spec for one proxy."""
        from bayesrm.alignment.bon import bon_curves
        from bayesrm.rewards import parse_reward
        from bayesrm.rewards.transforms import Standardizer

        c = self.config
        N = c.bon.n_samples
        P = len(prompt_ids) // N
        z = Standardizer.fit(pred)(pred)  # proxy in z-units, for plotting on one scale
        out = {}
        point_model = not bool((pred.var > 0).any())
        for spec in c.bon.rewards:
            if point_model and spec != "mean":
                continue  # no uncertainty: every penalty reduces to the mean
            reward = parse_reward(spec)
            if pred.members is None and reward.needs_members:
                continue  # worst-case over members needs an ensemble
            reward.fit(pred, prompt_ids)
            select = reward(pred, prompt_ids).view(P, N)
            out[spec] = bon_curves(z.mean.view(P, N), gold.mean.view(P, N), c.bon_ns(), n_boot=c.bon.n_boot,
                                   seed=c.seed, select=select, extra={"sigma": z.std.view(P, N)})
        return out

    def run(self) -> Path:
        """Run every stage; returns the path of the summary report."""
        from bayesrm.evaluation.gold import make_judge
        from bayesrm.evaluation.report import make_bon_report

        c = self.config
        gold_judge = make_judge(c.gold)
        train, valid = self.pairs(gold_judge)
        self.log(f"{len(train)} training / {len(valid)} validation preference pairs")
        prompt_ids, prompts, responses = self.bon_samples()
        gold = self.scores("gold", gold_judge, fingerprint({"gold": judge_identity(gold_judge)}), gold=True)
        all_curves: dict[str, dict[str, Any]] = {}
        select_curves: dict[str, dict[str, Any]] = {}
        proxy_metrics: dict[str, dict[str, float]] = {}
        preds: dict[str, RewardPrediction] = {}
        for spec in c.proxies:
            scorer = self.proxy(spec, train, valid)
            metrics_path = self.out / "proxies" / spec.name / "metrics.json"
            if metrics_path.exists():
                proxy_metrics[spec.name] = json.loads(metrics_path.read_text())
            pred = preds[spec.name] = self.scores(spec.name, scorer, self.stages.fingerprint_of(f"proxy {spec.name}"))
            with self.stage("curves"):
                all_curves[spec.name] = self.curves(gold, pred, prompt_ids)
                make_bon_report(self.out / "bon" / spec.name, all_curves[spec.name], self.settings(), self.timings,
                                seeds={"scenario": c.seed}, baseline="mean", title=f"{c.name}: best-of-n with proxy {spec.name}")
            if c.bon.selection_prompts:
                sel_ids = self.bon_samples("select")[0]
                sel_gold = self.scores("gold", gold_judge, fingerprint({"gold": judge_identity(gold_judge)}), split="select", gold=True)
                select_curves[spec.name] = self.curves(sel_gold, self.scores(spec.name, scorer, self.stages.fingerprint_of(f"proxy {spec.name}"), split="select"), sel_ids)
        sections = [self.sigma_gold_section(preds, gold)]
        if c.two_property is not None:
            sections.append(self.two_property(train, valid, gold, prompt_ids))
        if select_curves:
            from bayesrm.evaluation.report import save_curves

            save_curves(self.out / "select_curves.json", {f"{p}/{s}": cv for p, cs in select_curves.items() for s, cv in cs.items()})
        return write_summary(self.out, c, all_curves, proxy_metrics, sections, self.timings, select_curves=select_curves or None)

    def sigma_gold_section(self, preds: dict[str, RewardPrediction], gold: RewardPrediction) -> str:
        """Markdown: correlation of each proxy's sigma with its error |z(proxy) - z(gold)| on the best-of-n samples."""
        from bayesrm.evaluation.uncertainty import sigma_gold_correlation

        rows = {name: sigma_gold_correlation(pred.std, pred.mean, gold.mean) for name, pred in preds.items()}
        atomic_write_text(self.out / "sigma_gold.json", json.dumps(rows, indent=1))
        fmt = lambda x: "-" if x != x else f"{x:.3f}"  # noqa: E731 - NaN (point model) as '-'
        return "\n".join(["## Does sigma track the proxy's error?", "",
                          "Correlation of each proxy's sigma with |z(proxy) - z(gold)| over all best-of-n samples "
                          "(z: standardised over the samples; '-': sigma is constant, a point model).", "",
                          "| proxy | Pearson | Spearman |", "|---|---|---|",
                          *[f"| {n} | {fmt(r['pearson'])} | {fmt(r['spearman'])} |" for n, r in rows.items()], ""])

    def settings(self) -> dict[str, Any]:
        c = self.config
        return {"scenario": c.name, "policy": c.policy, "gold": c.gold, "sampling": json.dumps(to_mapping(c.sampling)),
                "preference prompts x samples": f"{c.preferences.prompts} x {c.preferences.samples_per_prompt}",
                "label temperature / noise": f"{c.preferences.label_temperature} / {c.preferences.label_noise}",
                "best-of-n prompts x N": f"{c.bon.prompts} x {c.bon.n_samples}", "reward model": json.dumps(to_mapping(c.model, changed_only=True)),
                "training": json.dumps(to_mapping(c.training, changed_only=True)), "proxies": ", ".join(f"{p.name} ({p.method})" for p in c.proxies),
                "seed": c.seed}

    def summary(self, all_curves: dict[str, dict[str, Any]], proxy_metrics: dict[str, dict[str, float]], sections: list[str]) -> Path:
        """This run's top-level report (see :func:`write_summary`)."""
        return write_summary(self.out, self.config, all_curves, proxy_metrics, sections, self.timings)

    # ---- two-property variant --------------------------------------------------------------
    def two_property(self, train1: list[PreferencePair], valid1: list[PreferencePair], gold1: RewardPrediction, prompt_ids: list[str]) -> str:
        """Sum of raw rewards vs sum of log-sigmoid transforms (logical AND): P(pick satisfies both)."""
        from bayesrm.alignment.bon import bon_curves, satisfies_all
        from bayesrm.evaluation.gold import make_judge
        from bayesrm.rewards import parse_reward

        c, tp = self.config, self.config.two_property
        P, N = c.bon.prompts, c.bon.n_samples
        map_spec = next((p for p in c.proxies if p.method == "map"), ProxyConfig())
        judge2 = make_judge(tp.gold)
        train2, valid2 = self.pairs(judge2, sign=tp.sign, tag="_prop2")
        rm1 = self.proxy(map_spec, train1, valid1)
        rm2 = self.proxy(map_spec, train2, valid2, tag="_prop2")
        gold2 = RewardPrediction.point(tp.sign * self.scores("gold_prop2", judge2, fingerprint({"gold": judge_identity(judge2)}), gold=True).mean)
        r1 = self.scores(map_spec.name, rm1, self.stages.fingerprint_of(f"proxy {map_spec.name}"))
        r2 = self.scores(f"{map_spec.name}_prop2", rm2, self.stages.fingerprint_of(f"proxy {map_spec.name}_prop2"))
        both = satisfies_all([gold1.mean.view(P, N), gold2.mean.view(P, N)], tp.thresholds)
        selections = {"sum of raw rewards": r1.mean + r2.mean}
        transformed = []
        for pred in (r1, r2):
            reward = parse_reward(f"log_sigmoid:q={tp.quantile}")
            reward.fit(pred, prompt_ids)
            transformed.append(reward(pred, prompt_ids))
        selections["sum of log-sigmoid (AND)"] = transformed[0] + transformed[1]
        curves = {name: bon_curves(sel.view(P, N), gold1.mean.view(P, N), c.bon_ns(), n_boot=c.bon.n_boot, seed=c.seed,
                                   extra={"p_all": both, "gold2": gold2.mean.view(P, N)})
                  for name, sel in selections.items()}
        ns = c.bon_ns()
        lines = ["## Two properties: logical AND by summed log-sigmoid rewards", "",
                 f"Gold 1 `{c.gold}` (>= {tp.thresholds[0]}), gold 2 `{tp.gold}` x {tp.sign:g} (>= {tp.thresholds[1]}); "
                 f"one MAP proxy per property; reference r_ref(x) = per-prompt {tp.quantile} quantile over the N samples.", "",
                 "P(best-of-n pick satisfies both properties):", "",
                 "| selection | " + " | ".join(f"n={n}" for n in ns) + " |", "|---" * (len(ns) + 1) + "|"]
        for name, curve in curves.items():
            band = curve.stats["p_all"]
            lines.append(f"| {name} | " + " | ".join(f"{float(m):.3f}" for m in band.mean) + " |")
        return "\n".join(lines) + "\n"
