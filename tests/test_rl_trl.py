"""The TRL adapter inside a real trl.GRPOTrainer step (tiny random Llama, CPU)."""

from __future__ import annotations

import pytest
import torch

from bayesrm.alignment.rl import trl_reward_func
from bayesrm.rewards import parse_reward
from test_rl_train import WordScorer, tiny_lm

trl = pytest.importorskip("trl")


class RecordingScorer(WordScorer):
    def __init__(self):
        self.calls: list[tuple[list, list]] = []

    def score(self, prompts, responses, batch_size=32, progress=False):
        self.calls.append((list(prompts), list(responses)))
        return super().score(prompts, responses, batch_size, progress)


def test_grpo_trainer_logs_the_bayesrm_reward(tiny_tokenizer_dir, tmp_path):
    """TRL calls the adapter with its own keywords; the reward it logs is the native bayesrm reward."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run_one_step(tiny_tokenizer_dir, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _run_one_step(tiny_tokenizer_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.bos_token, tok.eos_token = "<s>", "</s>"
    scorer = RecordingScorer()
    args = trl.GRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=6, use_cpu=True, report_to=[], logging_steps=1, save_strategy="no",
    )
    trainer = trl.GRPOTrainer(
        model=tiny_lm(tok),
        reward_funcs=[trl_reward_func(scorer, "up:beta2=1")],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["hello world", "the cat is", "a dog", "please help"]}),
        processing_class=tok,
    )
    trainer.train()
    assert len(scorer.calls) == 1
    prompts, responses = scorer.calls[0]
    assert len(prompts) == len(responses) == 4
    native = parse_reward("up:beta2=1")(WordScorer().score(prompts, responses))
    logged = trainer.state.log_history[0]["rewards/bayesrm_up/mean"]
    assert logged == pytest.approx(native.mean().item(), abs=1e-6)
