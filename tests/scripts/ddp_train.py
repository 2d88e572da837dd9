"""Two-process CPU training used by tests/test_distributed.py.

Run with ``accelerate launch --multi_gpu --num_processes 2 tests/scripts/ddp_train.py MODEL_DIR OUT_DIR``
(or ``torchrun --nproc_per_node 2 ...``); RewardTrainingConfig starts the gloo process group itself. Every rank writes its final trained weights to
OUT_DIR/rank{r}.safetensors so the test can check that the processes ended identical.
"""

import os
import sys

from safetensors.torch import save_file

from bayesrm.data.schema import PreferencePair
from bayesrm.models import RewardModel, RewardModelConfig
from bayesrm.training import RewardTrainingConfig, train_reward_model
from bayesrm.training.distributed import shutdown_distributed


def main(model_dir: str, out_dir: str) -> None:
    rank = int(os.environ.get("RANK", "0"))
    pos, neg = ["good", "great", "happy", "nice"], ["bad", "terrible", "sad", "rude"]
    pairs = [PreferencePair(f"what w{i}", f"it is {pos[i % 4]}", f"it is {neg[(i * 3) % 4]}") for i in range(32)]
    model = RewardModel.from_config(RewardModelConfig(backbone=model_dir, lora_r=2, max_length=16), seed=0)
    config = RewardTrainingConfig(output_dir=os.path.join(out_dir, "run"), per_device_train_batch_size=4,
                                  max_steps=4, learning_rate=1e-2, seed=0, use_cpu=True, logging_steps=1)
    trainer = train_reward_model(model, pairs, config)
    world = trainer.args.world_size
    state = {k: v.contiguous() for k, v in model.saved_state_dict().items()}
    save_file(state, os.path.join(out_dir, f"rank{rank}.safetensors"), metadata={"world_size": str(world),
              "wrapper_after_training": type(trainer.model_wrapped).__name__})
    shutdown_distributed()
    # Freeing DDP's Reducer at interpreter teardown can deadlock in torch (the gloo destructor joins
    # a worker thread that waits for the GIL the main thread holds; seen once in a fresh-clone CI
    # run). Everything is written and the group is shut down: leave without the teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
