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

import json
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from bayesrm.config import identity_mapping
from bayesrm.data.schema import PreferencePair
from bayesrm.fileio import atomic_write_text
from bayesrm.scenarios.config import ProxyConfig, ScenarioConfig
from bayesrm.scenarios.gold_scores import cached_judge_scores
from bayesrm.scenarios.proxies import train_proxy
from bayesrm.scenarios.stages import StageRecords, fingerprint, judge_identity, safe_name
from bayesrm.scenarios.summary import proxy_report_settings, sigma_gold_section, write_summary
from bayesrm.scenarios.two_property import two_property_section
from bayesrm.types import RewardPrediction


def sampling_identity(sampling: Any, device: str = "cpu") -> dict[str, Any]:
    """The sampling settings a stage's fingerprint records: exactly the sample cache's key
    (:meth:`SamplingConfig.cache_settings` with the dtype resolved on ``device``), so a stage is stale
    exactly when its samples would be redrawn, e.g. when ``dtype: auto`` resolves to bf16 on one machine
    and fp32 on another; ``batch_size``, which never changes a sample, is not part of it."""
    from bayesrm.generation.precision import resolve_dtype

    return sampling.cache_settings(resolve_dtype(sampling.dtype, device))


class BoNRunner:
    """Runs one scenario into ``out_dir``; every stage resumes from what is already there."""

    def __init__(self, config: ScenarioConfig, out_dir: str | Path, progress: bool = True, cache_dir: str | Path | None = None,
                 overwrite: bool = False):
        self.config = config
        for spec in config.proxies:  # proxy names become file names under out_dir: nothing may escape it
            safe_name(spec.name, f"scenario {config.name!r}: proxy name")
        from bayesrm.models.device import resolve_device

        self.device = resolve_device(config.device)
        """The resolved torch device (config.device: auto -> cuda or cpu) of the policy, the gold and the proxies."""
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
        settings = {"prompts": identity_mapping(c.prompts), "preference_prompts": c.preferences.prompts, "bon_prompts": c.bon.prompts,
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
                model, tokenizer = load_policy(self.config.policy, device=self.device)
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
        settings = {"policy": c.policy, "sampling": sampling_identity(c.sampling, self.device), "samples_per_prompt": c.preferences.samples_per_prompt,
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
        """Gold scores through the per-text cache beside the samples (see :mod:`bayesrm.scenarios.gold_scores`)."""
        return cached_judge_scores(judge, prompts, responses, self.cache_dir, progress=self.progress, chunk=chunk)

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
        settings = {"proxy": identity_mapping(spec), "model": identity_mapping(c.model), "training": c.training.identity(),
                    "seed": c.seed, "validation_fraction": c.preferences.validation_fraction, "max_pairs": c.preferences.max_pairs}
        _, fresh = self.stages.fresh(f"proxy {spec.name}{tag}", settings, upstream, [directory / "model" / "config.json"],
                                     cleanup=[directory])
        if not fresh:
            with self.stage(f"train proxy {spec.name}{tag}"):
                # a Laplace proxy's base: done above, so loaded from disk here
                base = self.proxy(base_spec, train, [], tag) if spec.method == "laplace" else None
                scorer = train_proxy(c, spec, train, directory, base=base, progress=self.progress, log=self.log,
                                     label=f"{spec.name}{tag}", device=self.device)
                scorer.save_pretrained(directory / "model")
                del scorer, base
        # always the saved proxy, on the run's device: a fresh run scores exactly what a resumed one would
        scorer = load_scorer(directory / "model", device=self.device)
        if valid and not (directory / "metrics.json").exists():
            from bayesrm.evaluation.outputs import write_evaluation

            metrics = write_evaluation(scorer, valid, directory, batch_size=64, title=f"proxy {spec.name}: validation pairs",
                                       progress=self.progress)
            self.log(f"{spec.name}{tag}: validation accuracy {metrics['accuracy']:.3f}, ECE {metrics['ece']:.3f}")
        return scorer

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
        settings = {"policy": c.policy, "sampling": sampling_identity(c.sampling, self.device), "n_samples": c.bon.n_samples, "scorer": name, "split": split}
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
        gold_judge = make_judge(c.gold, device=self.device)
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
                make_bon_report(self.out / "bon" / spec.name, all_curves[spec.name], proxy_report_settings(c), self.timings,
                                seeds={"scenario": c.seed}, baseline="mean", title=f"{c.name}: best-of-n with proxy {spec.name}")
            if c.bon.selection_prompts:
                sel_ids = self.bon_samples("select")[0]
                sel_gold = self.scores("gold", gold_judge, fingerprint({"gold": judge_identity(gold_judge)}), split="select", gold=True)
                select_curves[spec.name] = self.curves(sel_gold, self.scores(spec.name, scorer, self.stages.fingerprint_of(f"proxy {spec.name}"), split="select"), sel_ids)
        sections = [sigma_gold_section(self.out, preds, gold)]
        if c.two_property is not None:
            sections.append(two_property_section(self, train, valid, gold, prompt_ids))
        if select_curves:
            from bayesrm.evaluation.report import save_curves

            save_curves(self.out / "select_curves.json", {f"{p}/{s}": cv for p, cs in select_curves.items() for s, cv in cs.items()})
        return write_summary(self.out, c, all_curves, proxy_metrics, sections, self.timings, select_curves=select_curves or None)
