"""Multi-process CPU training (gloo) with the Hugging Face Trainer.

Measured here (transformers 5.23, accelerate 1.15, torch 2.13 CPU): the process group must exist
before ``TrainingArguments`` is built, or the Trainer silently trains each rank alone, and
``accelerate launch --cpu --num_processes 2`` starts a single process. What works, and is tested
(tests/test_distributed.py: two processes end with identical weights):

    accelerate launch --multi_gpu --num_processes 2 script.py      # on a CPU-only machine too
    torchrun --nproc_per_node 2 script.py

:class:`~bayesrm.training.RewardTrainingConfig` calls :func:`init_distributed_cpu` itself when
training on CPU. On GPUs nothing is needed: NCCL is set up by the Trainer as usual.
"""

from __future__ import annotations

import atexit
import os

import torch.distributed as dist


def init_distributed_cpu() -> bool:
    """Initialise a gloo process group when launched by torchrun / accelerate (WORLD_SIZE > 1).

    Returns True when running distributed. Safe to call in a single process (does nothing).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group(backend="gloo")
    # The group we start we also end: a gloo group still alive at interpreter exit can abort the
    # process ("terminate called without an active exception") after training has succeeded.
    atexit.register(shutdown_distributed)
    return True


def shutdown_distributed() -> None:
    """Wait for every rank, then destroy the process group (no-op when none is running)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
