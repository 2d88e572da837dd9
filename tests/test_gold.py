"""Gold judges against direct calls of the libraries they wrap."""

from __future__ import annotations

import pytest
import torch
from textblob import TextBlob
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from bayesrm.evaluation.gold import CallableJudge, RewardModelJudge, TextBlobJudge, VaderJudge, make_judge
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.types import RewardPrediction, RewardScorer

RESPONSES = [
    "I love this, it is wonderful!",
    "This is terrible and I hate it.",
    "The meeting is at noon.",
    "Not bad at all, quite good actually :)",
    "",
    "Awful day. Nice evening though!",
]
PROMPTS = [f"prompt {i}" for i in range(len(RESPONSES))]


def test_vader_is_the_compound_score_of_the_response():
    analyzer = SentimentIntensityAnalyzer()
    expected = torch.tensor([analyzer.polarity_scores(r)["compound"] for r in RESPONSES])
    pred = VaderJudge().score(PROMPTS, RESPONSES, batch_size=4)
    assert isinstance(pred, RewardPrediction) and isinstance(VaderJudge(), RewardScorer)
    torch.testing.assert_close(pred.mean, expected)
    assert torch.equal(pred.var, torch.zeros(len(RESPONSES)))
    assert pred.mean[0] > 0.5 and pred.mean[1] < -0.5 and pred.mean[2] == 0.0


@pytest.mark.parametrize("prop", ["polarity", "subjectivity"])
def test_textblob_matches_direct_calls(prop):
    expected = torch.tensor([getattr(TextBlob(r).sentiment, prop) for r in RESPONSES])
    pred = make_judge(f"textblob:{prop}").score(PROMPTS, RESPONSES, batch_size=2)
    torch.testing.assert_close(pred.mean, expected)
    assert (pred.var == 0).all()


def test_textblob_polarity_works_without_nltk_corpora(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])  # no corpora anywhere
    assert TextBlobJudge("polarity").score(["p"], ["What a great, lovely day."]).mean.item() > 0.5


def test_callable_judge_batches_and_validates():
    calls = []

    def fn(prompts, responses):
        calls.append(len(responses))
        return [len(p) + len(r) for p, r in zip(prompts, responses)]

    pred = CallableJudge(fn).score(PROMPTS, RESPONSES, batch_size=4)
    assert calls == [4, 2]
    assert pred.mean.tolist() == [float(len(p) + len(r)) for p, r in zip(PROMPTS, RESPONSES)]
    with pytest.raises(ValueError, match="returned 1 scores for a batch of 2"):
        CallableJudge(lambda p, r: [0.0], "short").score(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="non-finite score for pair 1"):
        CallableJudge(lambda p, r: [0.0, float("nan")], "nan").score(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        VaderJudge().score(["a", "b"], ["x"])


def test_reward_model_judge_scores_like_the_model(tiny_bert_dir, tmp_path):
    model = RewardModel.from_config(RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32), seed=0)
    with torch.no_grad():  # as if trained: non-zero LoRA updates, so the saved adapters matter
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "rm")
    expected = model.score(PROMPTS, RESPONSES).mean
    for judge in (make_judge(f"rm:{tmp_path / 'rm'}"), make_judge({"type": "rm", "path": str(tmp_path / "rm")})):
        assert isinstance(judge, RewardModelJudge)
        pred = judge.score(PROMPTS, RESPONSES, batch_size=3)
        torch.testing.assert_close(pred.mean, expected)
        assert (pred.var == 0).all()


def test_make_judge_specs_and_errors():
    assert isinstance(make_judge("vader"), VaderJudge)
    assert isinstance(make_judge({"type": "vader"}), VaderJudge)
    assert make_judge("textblob").property == "polarity"
    assert make_judge({"type": "textblob", "property": "subjectivity"}).property == "subjectivity"
    with pytest.raises(ValueError, match="unknown gold judge 'bleu'"):
        make_judge("bleu")
    with pytest.raises(ValueError, match="must be one of"):
        make_judge("textblob:anger")
    with pytest.raises(ValueError, match="expected type vader"):
        make_judge({"type": "rm"})
    with pytest.raises(Exception, match="no such checkpoint directory"):
        make_judge("rm:/nonexistent/checkpoint")


def test_length_judge_is_minus_the_length_counted_by_hand():
    prompts = ["ignored", "also ignored", "p"]
    responses = ["Sure, here  are\tthree words?\n", "  padded  ", ""]
    # by hand: "Sure," "here" "are" "three" "words?" -> 5 words; "padded" -> 1; "" -> 0
    assert make_judge("length:words").score(prompts, responses).mean.tolist() == [-5.0, -1.0, 0.0]
    assert make_judge("length").score(prompts, responses).mean.tolist() == [-5.0, -1.0, 0.0]
    # characters of the stripped response: "Sure," " " "here" "  " "are" "\t" "three" " " "words?" = 5+1+4+2+3+1+5+1+6 = 28
    chars = make_judge({"type": "length", "unit": "chars"})
    assert chars.name == "length:chars" and chars.score(prompts, responses).mean.tolist() == [-28.0, -6.0, 0.0]
    assert (chars.score(prompts, responses).var == 0).all()
    with pytest.raises(ValueError, match="length unit must be one of"):
        make_judge("length:tokens")
    with pytest.raises(ValueError, match="length \\(option 'unit'\\)"):
        make_judge({"type": "length", "words": 1})
