"""The curvature pass of a Laplace fit: batches of pairs -> one curvature block per linear map.

One forward and one backward pass per batch (jacobians.stream_pair_grads: each block's gradients
go to its accumulator as the backward pass reaches it, then are dropped).

Subsampling (LaplaceConfig.subsample). The GGN and the log-likelihood are sums over the N pairs;
from a subset of n pairs they are estimated by the subset's sums times N / n (unbiased for a
uniformly drawn subset). A list of pairs is subsampled pair by pair (a seeded uniform draw,
kept in input order, so fraction 1 is exactly the full fit); a loader of batches is subsampled
batch by batch (evenly spaced batches: the first, then every 1/fraction-th), with N counted from
all batches. docs/results/laplace.md reports the error against the full fit by fraction.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bayesrm.data.collator import PreferenceCollator, PreferenceDataset
from bayesrm.data.schema import PreferencePair
from bayesrm.uncertainty.laplace.config import LaplaceConfig
from bayesrm.uncertainty.laplace.jacobians import LinearBlock, TokenGrads, stream_pair_grads
from bayesrm.uncertainty.laplace.structures import CurvatureAccumulator, CurvatureBlock, get_structure

PairData = Sequence[PreferencePair] | Iterable[dict[str, torch.Tensor]]


def is_pair_list(data: PairData) -> bool:
    return isinstance(data, Sequence) and (len(data) == 0 or isinstance(data[0], PreferencePair))


def subsample_indices(n_total: int, subsample: float, seed: int) -> list[int]:
    """Indices (ascending) of the pairs a subsample keeps: all of them at fraction 1."""
    n = n_total if subsample >= n_total or subsample == 1 else (int(subsample) if subsample > 1 else max(1, round(subsample * n_total)))
    if n >= n_total:
        return list(range(n_total))
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return sorted(perm[:n].tolist())


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def pair_batches(model, data: PairData, batch_size: int, config: LaplaceConfig) -> tuple[Iterator[tuple[bool, dict]], int | None]:
    """((used?, batch) for every batch, number of batches when known). A list is subsampled before
    batching (and sharded by rank under torch.distributed); a loader is thinned batch by batch."""
    if is_pair_list(data):
        if len(data) == 0:
            raise ValueError("no preference pairs to fit on")
        pairs = [data[i] for i in subsample_indices(len(data), config.subsample, config.subsample_seed)]
        if _distributed():  # each process takes its share
            pairs = pairs[dist.get_rank() :: dist.get_world_size()]
        loader = DataLoader(PreferenceDataset(pairs, model.encoder), batch_size=batch_size, shuffle=False,
                            collate_fn=PreferenceCollator(model.encoder))
        return ((True, b) for b in loader), math.ceil(len(pairs) / batch_size)
    if config.subsample > 1:
        raise ValueError("subsample as a number of pairs needs a list of pairs; give a fraction for a loader of batches")
    frac = config.subsample
    return ((math.ceil((i + 1) * frac) > math.ceil(i * frac), b) for i, b in enumerate(data)), None  # type: ignore[arg-type]


def accumulate_curvature(
    model,
    blocks: list[LinearBlock],
    data: PairData,
    config: LaplaceConfig,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[dict[str, CurvatureBlock], float, int]:
    """(curvature block per map, log-likelihood sum log sigmoid(f) at the MAP, number of pairs N),
    both sums rescaled from the subsample to all N pairs."""
    device = model.device
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    structure = get_structure(config.structure)
    accs: dict[str, CurvatureAccumulator] = {b.name: structure.accumulator(b.shape, config, device, acc_dtype) for b in blocks}
    stats = torch.zeros(3, dtype=acc_dtype, device=device)  # [sum log sigmoid(f) over used pairs, used pairs, all pairs]
    batches, n_batches = pair_batches(model, data, batch_size, config)
    n_listed = len(data) if is_pair_list(data) else None  # type: ignore[arg-type]
    for used, batch in tqdm(batches, desc="laplace fit", disable=not progress, total=n_batches, unit="batch"):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        if ids.shape[0] % 2:
            raise ValueError(f"a pair batch needs an even number of rows (chosen then rejected), got {ids.shape[0]}")
        stats[2] += ids.shape[0] // 2
        if not used:
            continue
        offset = batch["margin"].to(device) if "margin" in batch else None

        def consume(f: torch.Tensor):
            f = f.to(acc_dtype) - (offset.to(acc_dtype) if offset is not None else 0.0)  # [B]
            p = torch.sigmoid(f)
            weights = (p * (1 - p)).sqrt()  # [B]
            stats[0] += F.logsigmoid(f).sum()
            stats[1] += f.shape[0]

            def sink(name: str, tg: TokenGrads) -> None:
                accs[name].update(tg, weights, mask)
            return sink

        stream_pair_grads(model, blocks, ids, mask, consume)
    if _distributed():
        dist.all_reduce(stats)
    for acc in accs.values():
        acc.all_reduce()
    n_used = int(stats[1])
    n_total = n_listed if n_listed is not None else int(stats[2])
    if n_used == 0:
        raise ValueError("no preference pairs to fit on")
    scale = n_total / n_used
    dtype = model.head.weight.dtype
    curvature = {name: acc.finalize(config.low_rank, dtype, scale=scale) for name, acc in accs.items()}
    return curvature, float(stats[0]) * scale, n_total
