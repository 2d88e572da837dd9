"""Laplace at scale, against float64 references: streamed low-rank K-FAC factors vs the dense ones,
curvature from a subsample vs the full fit, and the diagonal structure vs brute-force Jacobians.
Tiny 2-layer BERT (hidden 32) in float64, as in test_laplace_core.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import DataLoader

from bayesrm.data.collator import PreferenceCollator, PreferenceDataset
from bayesrm.models.checkpoint import CheckpointError, update_meta
from bayesrm.uncertainty.laplace import LaplaceLoRA
from bayesrm.uncertainty.laplace.factors import DenseFactorSum, StreamingFactorSum
from test_laplace_core import brute_force_ggn, brute_force_jacobians, kfac_dense, make_model, make_pairs, rel_err


# ---- streamed low-rank factors -------------------------------------------------------------------
def test_streamed_factor_matches_dense_top_k():
    """Rows with a 1/i covariance spectrum (d = 200), 40 batches of 24 rows, top k = 8 with
    oversample 16. Tolerances (measured: 0.010, 0.042, 1.000): top-k eigenvalues within 3 %
    (relative, each), top-k subspace within sin angle 0.1, spectral error of the whole factor
    within 5 % of the dense truncation's; the trace is kept exactly and the kept part never exceeds
    the true sum (Loewner order)."""
    g = torch.Generator().manual_seed(0)
    d, k = 200, 8
    spec = torch.arange(1, d + 1, dtype=torch.float64) ** -1.0
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    dense, streamed = DenseFactorSum(d), StreamingFactorSum(d, k + 16)
    for _ in range(40):
        X = torch.randn(24, d, generator=g, dtype=torch.float64) * spec.sqrt() @ basis.T  # [24, d]
        dense.add(X)
        streamed.add(X)
    S = dense.matrix
    fd, fs = dense.factor(k, 1.0, torch.float64), streamed.factor(k, 1.0, torch.float64)
    assert float(((fs.vals - fd.vals).abs() / fd.vals).max()) < 0.03
    assert float(torch.linalg.matrix_norm(fd.vecs @ fd.vecs.T - fs.vecs @ fs.vecs.T, ord=2)) < 0.1
    err_s = torch.linalg.matrix_norm(fs.dense() - S, ord=2)
    err_d = torch.linalg.matrix_norm(fd.dense() - S, ord=2)
    assert float(err_s) <= 1.05 * float(err_d)
    assert math.isclose(float(torch.trace(fs.dense())), float(torch.trace(S)), rel_tol=1e-6)
    kept = streamed.vecs.double() @ torch.diag(streamed.vals) @ streamed.vecs.double().T
    assert float(torch.linalg.eigvalsh(S - kept).min()) > -1e-6 * float(fd.vals[0])
    assert streamed.nbytes() < 0.2 * dense.nbytes()  # [d, 24] float32 vs [d, d] float64


def test_streamed_factor_is_exact_when_everything_fits():
    """Fewer rows than kept eigenpairs: nothing is truncated, so the streamed sum is the dense one."""
    g = torch.Generator().manual_seed(3)
    dense, streamed = DenseFactorSum(30), StreamingFactorSum(30, 12)
    for _ in range(3):
        X = torch.randn(4, 30, generator=g, dtype=torch.float64)
        dense.add(X)
        streamed.add(X)
    torch.testing.assert_close(streamed.factor(12, 2.0, torch.float64).dense(), 2.0 * dense.matrix, rtol=1e-6, atol=1e-6)


def test_streamed_kfac_fit_matches_dense_fit(tiny_bert_dir):
    """The LoRA factors of dimension 32 (LoRA A's input side, LoRA B's output side) streamed with
    k = 4 + oversample 8, against the same fit accumulated dense: top-k spectra within 5 %, and the
    predictive variances (rewards and pair margins) within 5 % (measured: 1.9e-3, 1.7e-5, 1.0e-5)."""
    model = make_model(tiny_bert_dir, r=2, modules=["query", "value"], layers=[0, 1])
    pairs = make_pairs(24)
    kw = dict(include_head=True, low_rank=4, prior_precision=2.0, oversample=8)
    dense = LaplaceLoRA(model, stream_above=None, **kw).fit(pairs, batch_size=4)
    streamed = LaplaceLoRA(model, stream_above=8, **kw).fit(pairs, batch_size=4)
    worst = 0.0
    for name, block in dense.curvature.items():
        other = streamed.curvature[name]
        for side in ("G", "A"):
            fd, fs = getattr(block, side), getattr(other, side)
            assert fd.dim == fs.dim and fd.rank == fs.rank
            worst = max(worst, float(((fs.vals - fd.vals).abs() / fd.vals.clamp_min(1e-12 * fd.vals.max())).max()))
            assert math.isclose(fs.rest * fs.n_rest + float(fs.vals.sum()), fd.rest * fd.n_rest + float(fd.vals.sum()), rel_tol=1e-6)
    test = make_pairs(6, offset=9)
    prompts, chosen, rejected = [p.prompt for p in test], [p.chosen for p in test], [p.rejected for p in test]
    v_d, v_s = dense.score(prompts, chosen).var, streamed.score(prompts, chosen).var
    m_d, m_s = dense.score_pairs(prompts, chosen, rejected).var, streamed.score_pairs(prompts, chosen, rejected).var
    print(f"\nstreamed vs dense K-FAC: worst top-k eigenvalue rel. error {worst:.2e}, reward var rel. error "
          f"{float(((v_s - v_d).abs() / v_d).max()):.2e}, margin var {float(((m_s - m_d).abs() / m_d).max()):.2e}")
    assert worst < 0.05
    torch.testing.assert_close(v_s, v_d, rtol=0.05, atol=0.0)
    torch.testing.assert_close(m_s, m_d, rtol=0.05, atol=0.0)
    assert streamed.log_marginal_likelihood() == pytest.approx(dense.log_marginal_likelihood(), rel=0.02)


# ---- subsampled curvature ------------------------------------------------------------------------
def test_subsampled_curvature_approaches_the_full_fit(tiny_bert_dir):
    """Relative Frobenius error of the (dense, exact-factor) curvature from a subsample, averaged over
    4 seeds, falls as the fraction f grows, like sqrt((1 - f) / f), and is exactly 0 at f = 1
    (measured for K-FAC: 1.41, 0.89, 0.54, 0 at f = 0.1, 0.25, 0.5, 1 with 40 pairs)."""
    model = make_model(tiny_bert_dir, r=2, modules=["query"], layers=[1])
    pairs = make_pairs(40)
    kw = dict(include_head=True, low_rank=None)
    for structure in ("kfac", "diag"):
        full = LaplaceLoRA(model, structure=structure, **kw).fit(pairs, batch_size=8)
        H = kfac_dense(full)
        errors, lls = [], []
        for frac in (0.1, 0.25, 0.5, 1.0):
            fits = [LaplaceLoRA(model, structure=structure, subsample=frac, subsample_seed=s, **kw).fit(pairs, batch_size=8) for s in range(4)]
            assert all(la.n_data == 40 for la in fits)
            errors.append(sum(rel_err(kfac_dense(la), H) for la in fits) / len(fits))
            lls.append(sum(abs(la.log_likelihood - full.log_likelihood) for la in fits) / len(fits) / abs(full.log_likelihood))
        print(f"\n[{structure}] subsample 0.1 / 0.25 / 0.5 / 1: curvature rel. error {[round(e, 3) for e in errors]}, "
              f"log-lik rel. error {[round(e, 3) for e in lls]}")
        assert errors[0] > errors[1] > errors[2] > errors[3] == 0.0
        assert lls[-1] == 0.0
        # a uniform subset's rescaled sum has relative error ~ sqrt((1 - f) / f) (finite population)
        for frac, err in zip((0.1, 0.25), errors):
            expected = math.sqrt((1 - frac) / frac)  # relative to fraction 0.5, where it is 1
            assert 0.6 * expected < err / errors[2] < 1.5 * expected


def test_subsample_count_and_loader_fraction(tiny_bert_dir):
    model = make_model(tiny_bert_dir, r=2, modules=["query"], layers=[1])
    pairs = make_pairs(24)
    by_count = LaplaceLoRA(model, structure="diag", subsample=6).fit(pairs, batch_size=4)
    from bayesrm.uncertainty.laplace.fitting import subsample_indices

    picked = [pairs[i] for i in subsample_indices(24, 6, 0)]
    assert len(picked) == 6
    own = LaplaceLoRA(model, structure="diag").fit(picked, batch_size=4)
    assert by_count.n_data == 24 and own.n_data == 6
    for name, block in own.curvature.items():  # the subset's sums times N / n = 4
        torch.testing.assert_close(by_count.curvature[name].h, 4.0 * block.h)
    assert by_count.log_likelihood == pytest.approx(4.0 * own.log_likelihood, rel=1e-12)
    # a loader is thinned batch by batch: 6 batches of 4 at fraction 1/3 -> batches 0 and 3, scale 3
    loader = DataLoader(PreferenceDataset(pairs, model.encoder), batch_size=4, collate_fn=PreferenceCollator(model.encoder))
    thinned = LaplaceLoRA(model, structure="diag", subsample=1 / 3).fit(loader)
    kept = LaplaceLoRA(model, structure="diag").fit(pairs[0:4] + pairs[12:16], batch_size=4)
    assert thinned.n_data == 24
    for name, block in kept.curvature.items():
        torch.testing.assert_close(thinned.curvature[name].h, 3.0 * block.h)
    with pytest.raises(ValueError, match="needs a list of pairs"):
        LaplaceLoRA(model, subsample=6).fit(loader)
    for bad in (0.0, -1.0, 2.5, float("nan")):
        with pytest.raises(ValueError, match="subsample"):
            LaplaceLoRA(model, subsample=bad)


# ---- the diagonal structure ----------------------------------------------------------------------
def test_diagonal_structure_against_brute_force(tiny_bert_dir):
    """'diag' is the exact diagonal of the brute-force GGN; its variance, evidence and samples equal
    dense algebra with H = diag(GGN)."""
    from bayesrm.uncertainty.laplace.evidence import logdet_posterior_precision

    model = make_model(tiny_bert_dir, r=2, modules=["query", "value"], layers=[1])
    pairs = make_pairs(12)
    la = LaplaceLoRA(model, include_head=True, structure="diag", prior_precision=0.5).fit(pairs, batch_size=5)
    H, _ = brute_force_ggn(model, la.blocks_list, pairs)
    D = kfac_dense(la)
    torch.testing.assert_close(D, torch.diag(torch.diagonal(H)), rtol=1e-8, atol=1e-12)
    sigma = torch.linalg.inv(D + 0.5 * torch.eye(la.n_params, dtype=torch.float64))
    test = make_pairs(4, offset=5)
    prompts, chosen, rejected = [p.prompt for p in test], [p.chosen for p in test], [p.rejected for p in test]
    J = brute_force_jacobians(model, la.blocks_list, prompts, chosen)
    torch.testing.assert_close(la.score(prompts, chosen).var.double(), torch.einsum("np,pq,nq->n", J, sigma, J), rtol=1e-5, atol=1e-8)
    Jf = brute_force_jacobians(model, la.blocks_list, prompts, chosen, rejected)
    torch.testing.assert_close(la.score_pairs(prompts, chosen, rejected).var.double(), torch.einsum("np,pq,nq->n", Jf, sigma, Jf),
                               rtol=1e-5, atol=1e-8)
    logdet = torch.linalg.slogdet(D + 0.5 * torch.eye(la.n_params, dtype=torch.float64))[1]
    assert math.isclose(logdet_posterior_precision(list(la.curvature.values()), 0.5), float(logdet), rel_tol=1e-10)
    mc = la.mc_score(prompts, chosen, n_samples=40, seed=1)
    assert mc.members.shape == (40, 4) and torch.isfinite(mc.var).all()


def test_structure_is_saved_validated_and_defaults_to_kfac(tiny_bert_dir, tmp_path):
    model = make_model(tiny_bert_dir, r=2, modules=["query"], layers=[1]).float()
    pairs = make_pairs(10)
    prompts, chosen = [p.prompt for p in pairs], [p.chosen for p in pairs]
    diag = LaplaceLoRA(model, structure="diag", prior_precision=2.0).fit(pairs, batch_size=5)
    diag.save_pretrained(tmp_path / "diag")
    loaded = LaplaceLoRA.from_pretrained(tmp_path / "diag")
    assert loaded.config.structure == "diag"
    torch.testing.assert_close(loaded.score(prompts, chosen).var, diag.score(prompts, chosen).var)
    # a posterior written before the structure field existed loads as K-FAC
    kfac = LaplaceLoRA(model, prior_precision=2.0).fit(pairs, batch_size=5)
    kfac.save_pretrained(tmp_path / "old")
    settings = json.loads((tmp_path / "old" / "config.json").read_text())["laplace"]
    for key in ("structure", "stream_above", "oversample", "subsample", "subsample_seed"):
        settings.pop(key)
    update_meta(tmp_path / "old", laplace=settings)
    old = LaplaceLoRA.from_pretrained(tmp_path / "old")
    assert old.config.structure == "kfac"
    torch.testing.assert_close(old.score(prompts, chosen).var, kfac.score(prompts, chosen).var)
    # an unknown structure, or K-FAC factors under a 'diag' label, fail naming the file
    update_meta(tmp_path / "old", laplace={**settings, "structure": "full"})
    with pytest.raises(CheckpointError, match="config.json.*structure"):
        LaplaceLoRA.from_pretrained(tmp_path / "old")
    update_meta(tmp_path / "old", laplace={**settings, "structure": "diag"})
    with pytest.raises(CheckpointError, match="factors"):
        LaplaceLoRA.from_pretrained(tmp_path / "old")
    with pytest.raises(ValueError, match="structure"):
        LaplaceLoRA(model, structure="full")
    with pytest.raises(ValueError, match="applies to structure 'kfac' only"):
        LaplaceLoRA(model, structure="diag", kfac="expand")


def test_cli_structure_and_subsample_flags(tiny_bert_dir, tmp_path):
    """--structure / --subsample are generated from LaplaceConfig and end up in the saved posterior."""
    import argparse

    from bayesrm.cli import laplace as cli

    model = make_model(tiny_bert_dir, r=2, modules=["query"], layers=[1]).float()
    model.save_pretrained(tmp_path / "rm")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n" for p in make_pairs(20)))
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["laplace", "--model", str(tmp_path / "rm"), "--data", str(data), "--out", str(tmp_path / "post"),
                              "--structure", "diag", "--subsample", "0.5", "--test-fraction", "0.2"])
    assert args.run(args) == 0
    la = LaplaceLoRA.from_pretrained(tmp_path / "post")
    assert la.config.structure == "diag" and la.config.subsample == 0.5 and la.n_data == 16
    args = parser.parse_args(["laplace", "--model", str(tmp_path / "rm"), "--data", str(data), "--out", str(tmp_path / "p2"),
                              "--structure", "full"])
    with pytest.raises(ValueError, match="structure"):
        args.run(args)


def test_streamed_factor_all_reduce_across_two_processes(tmp_path):
    """gloo, 2 processes with half the rows each: both ranks end with the same streamed factor, and it
    matches the single-process dense sum's top-k (d = 60, k = 6 of l = 10; tolerance 5 %, measured 3.7 %)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    script = Path(__file__).parent / "scripts" / "laplace_ddp_factors.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), "29541"], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sys.path.insert(0, str(script.parent))
    from laplace_ddp_factors import rows

    X = rows().reshape(-1, 60)
    torch.testing.assert_close(a["dense"], X.T @ X)
    ref = DenseFactorSum(60)
    ref.add(X)
    top = ref.factor(6, 1.0, torch.float64)
    assert float(((a["vals"] - top.vals).abs() / top.vals).max()) < 0.05
    assert math.isclose(float(a["vals"].sum()) + 54 * float(a["rest"]), float(torch.trace(X.T @ X)), rel_tol=1e-9)
