"""Laplace-LoRA maths against brute force: a dense GGN from per-pair autograd Jacobians (one backward
per pair, in this test only), dense inverses and log-determinants, and a grid search of the evidence.
Tiny 2-layer BERT in float64, LoRA on one or two modules (a few hundred parameters)."""

from __future__ import annotations

import math

import torch

from bayesrm.data.schema import PreferencePair
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.uncertainty.laplace import LaplaceLoRA
from bayesrm.uncertainty.laplace.jacobians import collect_blocks, per_example_jacobians
from bayesrm.uncertainty.laplace.kfac import EigenFactor, KroneckerBlock

torch.set_default_dtype(torch.float32)


def make_model(tiny_bert_dir, r: int, modules: list[str], layers: list[int] | None = None) -> RewardModel:
    cfg = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=r, max_length=16, target_modules=modules, lora_layers=layers)
    model = RewardModel.from_config(cfg, seed=0).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a non-trivial "MAP": peft initialises B = 0
        for layer in model.lora_modules().values():
            for part in (layer.lora_A["default"], layer.lora_B["default"]):
                part.weight.copy_(0.5 * torch.randn(part.weight.shape, generator=g, dtype=torch.float64))
    return model


def make_pairs(n: int, offset: int = 0) -> list[PreferencePair]:
    good = ["good", "great", "happy", "nice", "kind", "safe"]
    bad = ["bad", "terrible", "sad", "rude", "harm", "steal"]
    return [
        PreferencePair(f"what do you think w{(i + offset) % 40}", f"it is {good[i % 6]} w{(3 * i) % 40}", f"it is {bad[(i + 1) % 6]} w{(5 * i) % 40}")
        for i in range(n)
    ]


def brute_force_jacobians(model: RewardModel, blocks, prompts, chosen, rejected=None) -> torch.Tensor:
    """[N, P] d out_n / d phi by one autograd call per example (out = r, or the margin f for pairs)."""
    rows = []
    params = [p for b in blocks for p in ([b.module.weight, b.module.bias] if b.with_bias else [b.module.weight])]
    for i in range(len(prompts)):
        seqs = [chosen[i]] + ([rejected[i]] if rejected is not None else [])
        batch = model.encoder([prompts[i]] * len(seqs), seqs)
        r = model(batch["input_ids"], batch["attention_mask"])
        out = r[0] - r[1] if rejected is not None else r[0]
        grads = dict(zip(map(id, params), torch.autograd.grad(out, params)))
        flat = []
        for b in blocks:
            gw = grads[id(b.module.weight)]
            flat.append((torch.cat([gw, grads[id(b.module.bias)][:, None]], 1) if b.with_bias else gw).reshape(-1))
        rows.append(torch.cat(flat))
    return torch.stack(rows)


def brute_force_ggn(model: RewardModel, blocks, pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """(H [P, P], f [N]): the BT GGN sum_n p_n (1 - p_n) g_n g_n^T from per-pair Jacobians."""
    J = brute_force_jacobians(model, blocks, [p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs])
    with torch.no_grad():
        batch = model.encoder([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
        r = model(batch["input_ids"], batch["attention_mask"])
        f = r[: len(pairs)] - r[len(pairs):]
    lam = torch.sigmoid(f) * (1 - torch.sigmoid(f))
    return J.T @ (lam[:, None] * J), f


def block_slices(blocks) -> list[slice]:
    out, start = [], 0
    for b in blocks:
        out.append(slice(start, start + b.numel))
        start += b.numel
    return out


def kfac_dense(la: LaplaceLoRA) -> torch.Tensor:
    return torch.block_diag(*[la.curvature[b.name].dense() for b in la.blocks_list])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---- curvature ---------------------------------------------------------------------------------
def test_pair_kfac_is_exact_for_rank_one_lora_and_head(tiny_bert_dir):
    """A rank-1 LoRA map (A: d_out = 1, B: d_in = 1) and the head (d_out = 1) have a one-dimensional
    side, where 'pair' K-FAC is exact: each diagonal block equals the brute-force GGN block."""
    model = make_model(tiny_bert_dir, r=1, modules=["query", "value"], layers=[1])
    pairs = make_pairs(12)
    la = LaplaceLoRA(model, include_head=True, low_rank=None).fit(pairs, batch_size=5)
    H, _ = brute_force_ggn(model, la.blocks_list, pairs)
    head = 32 + int(model.head.bias is not None)
    assert la.n_params == H.shape[0] == 2 * (32 + 32) + head
    for block, sl in zip(la.blocks_list, block_slices(la.blocks_list)):
        torch.testing.assert_close(la.curvature[block.name].dense(), H[sl, sl], rtol=1e-8, atol=1e-10)


def test_kfac_error_where_not_exact_is_reported(tiny_bert_dir):
    """Rank 2, two adapted layers: K-FAC is an approximation. 'pair' keeps each block's trace exactly;
    both modes' errors against the full GGN are printed (see docs/results/laplace.md)."""
    model = make_model(tiny_bert_dir, r=2, modules=["query", "value"], layers=[0, 1])
    pairs = make_pairs(12)
    H, _ = brute_force_ggn(model, collect_blocks(model, include_head=True), pairs)
    lam = 1.0
    exact_logdet = torch.linalg.slogdet(H + lam * torch.eye(H.shape[0], dtype=H.dtype))[1]
    for mode in ("pair", "expand"):
        la = LaplaceLoRA(model, include_head=True, low_rank=None, kfac=mode).fit(pairs, batch_size=8)
        K = kfac_dense(la)
        blockdiag = torch.block_diag(*[H[s, s] for s in block_slices(la.blocks_list)])
        kfac_logdet = torch.linalg.slogdet(K + lam * torch.eye(K.shape[0], dtype=K.dtype))[1]
        print(f"\n[{mode}] P={la.n_params} rel. Frobenius error vs full GGN {rel_err(K, H):.3f}, "
              f"vs its block diagonal {rel_err(K, blockdiag):.3f}; logdet(H+I) {float(kfac_logdet):.2f} vs exact {float(exact_logdet):.2f}")
        if mode == "pair":
            for block, sl in zip(la.blocks_list, block_slices(la.blocks_list)):
                assert math.isclose(float(torch.trace(K[sl, sl])), float(torch.trace(H[sl, sl])), rel_tol=1e-9)
            assert rel_err(K, blockdiag) < 0.5


def test_expand_kfac_is_exact_for_one_token(tiny_bert_dir):
    """Classic K-FAC-expand with one pair whose rows each have one token and a head that sees one row:
    for the head (d_out = 1) expand's activation factor is (a_w a_w^T + a_l a_l^T)/2 and its gradient
    factor 2 lam, the brute-force K-FAC formula; this checks hooking and normalisation by hand."""
    model = make_model(tiny_bert_dir, r=1, modules=["query"], layers=[1])
    la = LaplaceLoRA(model, include_head=True, low_rank=None, kfac="expand")
    ids = torch.tensor([[10], [11]])
    mask = torch.ones_like(ids)
    la.fit([{"input_ids": ids, "attention_mask": mask}])
    with torch.no_grad():
        feats = model.features(ids, mask)  # [2, H] inputs of the head
        f = model.head(feats)[0, 0] - model.head(feats)[1, 0]
    a = torch.cat([feats, torch.ones(2, 1, dtype=feats.dtype)], 1) if model.head.bias is not None else feats
    p = torch.sigmoid(f)
    expected = torch.kron((2 * p * (1 - p)).reshape(1, 1), (a.T @ a) / 2)
    torch.testing.assert_close(la.curvature["head"].dense(), expected)


# ---- low-rank factors --------------------------------------------------------------------------
def test_low_rank_factor_truncation_is_bounded():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 30, generator=g, dtype=torch.float64) * torch.logspace(0, -3, 30, dtype=torch.float64)
    S = X.T @ X  # [30, 30] with a decaying spectrum
    vals = torch.linalg.eigvalsh(S).flip(0)
    for k in (1, 5, 10, 29, 30):
        f = EigenFactor.from_matrix(S, low_rank=k)
        err = torch.linalg.matrix_norm(f.dense() - S, ord=2)
        bound = vals[k] if k < 30 else 0.0  # the rest is replaced by the mean of eigenvalues k+1..d
        assert float(err) <= float(bound) + 1e-10
        assert math.isclose(float(torch.trace(f.dense())), float(torch.trace(S)), rel_tol=1e-10)


def test_kronecker_apply_and_logdet_match_dense_algebra():
    """Sigma X (four eigen-parts with low-rank remainders) and log det(H + lambda I) from the spectrum
    equal dense linear algebra on the matrix the factors represent."""
    from bayesrm.uncertainty.laplace.evidence import logdet_posterior_precision

    g = torch.Generator().manual_seed(1)
    def spd(d: int) -> torch.Tensor:
        X = torch.randn(d + 3, d, generator=g, dtype=torch.float64)
        return X.T @ X
    block = KroneckerBlock(G=EigenFactor.from_matrix(spd(6), low_rank=2), A=EigenFactor.from_matrix(spd(5), low_rank=3))
    H = block.dense()
    lam = 0.7
    X = torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    dense_sigma = torch.linalg.inv(H + lam * torch.eye(30, dtype=torch.float64))
    got = block.apply(X, lambda h: 1 / (h + lam)).reshape(4, 30)
    torch.testing.assert_close(got, X.reshape(4, 30) @ dense_sigma.T)
    expected = torch.linalg.slogdet(H + lam * torch.eye(30, dtype=torch.float64))[1]
    assert math.isclose(logdet_posterior_precision([block], lam), float(expected), rel_tol=1e-10)


# ---- Jacobians and predictive ------------------------------------------------------------------
def test_batched_jacobians_equal_per_example_loop(tiny_bert_dir):
    model = make_model(tiny_bert_dir, r=2, modules=["query", "value"], layers=[0, 1])
    blocks = collect_blocks(model, include_head=True)
    pairs = make_pairs(6)
    prompts, chosen, rejected = [p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs]
    batch = model.encoder(prompts + prompts, chosen + ["hello"] * 3 + rejected[3:])  # unequal lengths: padding
    r, jac = per_example_jacobians(model, blocks, batch["input_ids"], batch["attention_mask"])
    J = torch.cat([jac[b.name].reshape(len(r), -1) for b in blocks], 1)
    ref = brute_force_jacobians(model, blocks, prompts + prompts, chosen + ["hello"] * 3 + rejected[3:])
    torch.testing.assert_close(J, ref)
    # pairs: d f / d phi = J_w - J_l from the same one forward / backward
    batch = model.encoder(prompts + prompts, chosen + rejected)
    f, jac = per_example_jacobians(model, blocks, batch["input_ids"], batch["attention_mask"], pairs=True)
    Jf = torch.cat([jac[b.name].reshape(len(f), -1) for b in blocks], 1)
    torch.testing.assert_close(Jf, brute_force_jacobians(model, blocks, prompts, chosen, rejected))


def test_linearised_variance_equals_dense_J_sigma_J(tiny_bert_dir):
    model = make_model(tiny_bert_dir, r=2, modules=["query"], layers=[1])
    la = LaplaceLoRA(model, include_head=True, low_rank=8, prior_precision=3.0).fit(make_pairs(10), batch_size=4)
    sigma = torch.linalg.inv(kfac_dense(la) + 3.0 * torch.eye(la.n_params, dtype=torch.float64))
    test = make_pairs(5, offset=7)
    prompts, chosen, rejected = [p.prompt for p in test], [p.chosen for p in test], [p.rejected for p in test]
    J = brute_force_jacobians(model, la.blocks_list, prompts, chosen)
    pred = la.score(prompts, chosen, batch_size=2)
    torch.testing.assert_close(pred.var.double(), torch.einsum("np,pq,nq->n", J, sigma, J), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(pred.mean, model.score(prompts, chosen).mean, rtol=1e-5, atol=1e-6)
    Jf = brute_force_jacobians(model, la.blocks_list, prompts, chosen, rejected)
    pair_pred = la.score_pairs(prompts, chosen, rejected, batch_size=3)
    torch.testing.assert_close(pair_pred.var.double(), torch.einsum("np,pq,nq->n", Jf, sigma, Jf), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(pair_pred.mean, pred.mean - la.score(prompts, rejected).mean, rtol=1e-5, atol=1e-6)


def test_linearised_variance_agrees_with_monte_carlo(tiny_bert_dir):
    """A tight posterior (large lambda): the network is nearly linear over it, so MC variance of
    rescored samples matches J Sigma J^T within Monte-Carlo error (std error of a variance ~ sqrt(2/S) = 6% at S = 500)."""
    model = make_model(tiny_bert_dir, r=2, modules=["query"], layers=[1])
    la = LaplaceLoRA(model, include_head=True, low_rank=None, prior_precision=200.0).fit(make_pairs(10), batch_size=5)
    prompts, responses = ["what do you think w3", "hello"], ["it is good w9", "cat dog food"]
    lin = la.score(prompts, responses)
    mc = la.mc_score(prompts, responses, n_samples=500, seed=0)
    print(f"\nlinearised var {lin.var.tolist()}  MC var {mc.var.tolist()}")
    torch.testing.assert_close(mc.var, lin.var, rtol=0.2, atol=0.0)
    torch.testing.assert_close(mc.mean, lin.mean, rtol=0.0, atol=float(4 * (lin.var.max() / 500) ** 0.5))
    # the weights are restored exactly after sampling
    torch.testing.assert_close(la.score(prompts, responses).mean, lin.mean, rtol=0, atol=0)


# ---- evidence ----------------------------------------------------------------------------------
def test_evidence_optimum_matches_dense_grid_search(tiny_bert_dir):
    model = make_model(tiny_bert_dir, r=2, modules=["query"], layers=[1])
    pairs = make_pairs(12)
    la = LaplaceLoRA(model, include_head=False, low_rank=None).fit(pairs, batch_size=6)
    K = kfac_dense(la)
    phi = la.map_vector()
    _, f = brute_force_ggn(model, la.blocks_list, pairs)
    loglik = float(torch.nn.functional.logsigmoid(f).sum())
    assert math.isclose(la.log_likelihood, loglik, rel_tol=1e-10)
    P = la.n_params

    def dense_evidence(lam: float) -> float:
        logdet = torch.linalg.slogdet(K + lam * torch.eye(P, dtype=K.dtype))[1]
        return loglik - 0.5 * lam * float(phi @ phi) + 0.5 * P * math.log(lam) - 0.5 * float(logdet)

    assert math.isclose(la.log_marginal_likelihood(0.3), dense_evidence(0.3), rel_tol=1e-9)
    grid = torch.logspace(-4, 6, 4001, dtype=torch.float64).tolist()
    best = max(grid, key=dense_evidence)
    lam = la.optimize_prior_precision()
    print(f"\nevidence-optimal prior precision {lam:.5g} (dense grid {best:.5g})")
    assert la.prior_precision == lam
    assert abs(math.log10(lam) - math.log10(best)) < 2.5e-3 + 1e-3  # grid spacing 2.5e-3 in log10
    assert dense_evidence(lam) >= dense_evidence(best) - 1e-6


def test_variance_grows_off_the_training_data(tiny_bert_dir):
    """With a weak prior, a training pair's margin variance stays bounded (its Jacobian lies in the span
    of the data: g^T (sum_m lam_m g_m g_m^T + lambda I)^-1 g <= 1 / lam_n per block, exact K-FAC at r = 1)
    while pairs of unseen words, whose Jacobians leave that span, grow like 1 / lambda."""
    model = make_model(tiny_bert_dir, r=1, modules=["query"], layers=[1])
    train = make_pairs(4)
    la = LaplaceLoRA(model, include_head=True, low_rank=None, prior_precision=1e-6).fit(train, batch_size=4)
    prompts = [p.prompt for p in train]
    seen = la.score_pairs(prompts, [p.chosen for p in train], [p.rejected for p in train])
    shifted = la.score_pairs(prompts, ["cat dog food world", "why how when where", "human assistant help", "yes no okay please"],
                             ["sorry sure okay", "hello world", "answer question", "please thanks"])
    p = torch.sigmoid(seen.mean.double())
    bound = len(la.blocks_list) / (p * (1 - p))  # sum over blocks of 1 / lam_n
    print(f"\nmargin variance at lambda=1e-6: training pairs {seen.var.tolist()}, shifted pairs {shifted.var.tolist()}")
    assert torch.all(seen.var.double() <= bound * (1 + 1e-3))
    assert shifted.var.min() > 1e3 * seen.var.max()


def _pair_kfac_vs_exact(d_out: int, d_in: int, n: int = 20, seed: int = 0) -> float:
    """Relative Frobenius error of 'pair' K-FAC G (x) A against the exact block sum_n vec(M_n) vec(M_n)^T
    for rank-one per-pair gradients M_n = g_n a_n^T (one token on the chosen side, none on the rejected)."""
    from bayesrm.uncertainty.laplace.jacobians import TokenGrads
    from bayesrm.uncertainty.laplace.kfac import KFACAccumulator

    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    g = torch.randn(n, d_out, generator=gen, dtype=torch.float64)
    tg = TokenGrads(inputs=torch.cat([a, torch.zeros_like(a)]), grads=torch.cat([g, torch.zeros_like(g)]))
    acc = KFACAccumulator(d_out, d_in, mode="pair")
    acc.update(tg, torch.ones(n, dtype=torch.float64), torch.ones(2 * n, 1))
    K = acc.finalize(low_rank=None, dtype=torch.float64).dense()
    M = g[:, :, None] * a[:, None, :]  # [n, d_out, d_in], each of rank one
    exact = torch.einsum("ni,nj->ij", M.reshape(n, -1), M.reshape(n, -1))  # row-major vec order
    return rel_err(K, exact)


def test_pair_kfac_exact_iff_one_side_is_one_dimensional():
    """Rank-one M_n alone does not make K-FAC exact (a sum of Kronecker products is not one); it is
    exact when d_out = 1 (the head; LoRA A at r = 1) or d_in = 1 (LoRA B at r = 1)."""
    assert _pair_kfac_vs_exact(1, 6) < 1e-12
    assert _pair_kfac_vs_exact(5, 1) < 1e-12
    err = _pair_kfac_vs_exact(4, 6)
    print(f"\nrank-one M_n, d_out = 4, d_in = 6: rel. Frobenius error {err:.3f}")
    assert err > 0.05
