"""Two gloo processes each stream half of the rows into a StreamingFactorSum (and a DenseFactorSum),
then all-reduce; every rank saves its result. Usage: python laplace_ddp_factors.py OUT_DIR PORT"""

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file

from bayesrm.uncertainty.laplace.factors import DenseFactorSum, StreamingFactorSum


def rows() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    d = 60
    spec = torch.arange(1, d + 1, dtype=torch.float64) ** -1.5
    return torch.randn(8, 20, d, generator=g, dtype=torch.float64) * spec.sqrt()  # [batches, rows, d]


def worker(rank: int, out: str, port: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    dense, streamed = DenseFactorSum(60), StreamingFactorSum(60, 10)
    for X in rows()[rank::2]:
        dense.add(X)
        streamed.add(X)
    dense.all_reduce()
    streamed.all_reduce()
    f = streamed.factor(6, 1.0, torch.float64)
    save_file({"dense": dense.matrix, "vecs": f.vecs, "vals": f.vals, "rest": torch.tensor([f.rest], dtype=torch.float64)},
              os.path.join(out, f"rank{rank}.safetensors"))
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=2)
