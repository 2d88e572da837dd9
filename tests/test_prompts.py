"""Prompt sources: seeded chat messages from chitchat-dataset and prompt files with located errors."""

from __future__ import annotations

import json

import pytest
from chitchat_dataset import MessageDataset

from bayesrm.data.errors import DataError
from bayesrm.data.prompts import chitchat_prompts, load_prompts
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def all_messages() -> set[str]:
    """Every message as the package's own iterator yields it, whitespace-normalised."""
    return {" ".join(m.split()) for m in MessageDataset()}


def test_chitchat_prompts_are_real_filtered_distinct_messages(all_messages):
    prompts = chitchat_prompts(300, seed=1, min_words=5, max_words=12)
    assert len(prompts) == 300
    assert set(prompts) <= all_messages
    assert all(5 <= len(p.split()) <= 12 for p in prompts)
    assert len({p.lower() for p in prompts}) == 300
    assert not any("http" in p.lower() or "www." in p.lower() for p in prompts)
    questions = chitchat_prompts(50, seed=1, questions_only=True)
    assert all(q.endswith("?") for q in questions) and set(questions) <= all_messages


def test_chitchat_prompts_are_seeded_and_prefix_consistent():
    a = chitchat_prompts(40, seed=0)
    assert a == chitchat_prompts(40, seed=0)
    assert chitchat_prompts(10, seed=0) == a[:10]
    assert len(set(a) & set(chitchat_prompts(40, seed=1))) < 10


def test_chitchat_prompts_bad_arguments():
    with pytest.raises(ValueError, match="min_words <= max_words"):
        chitchat_prompts(5, min_words=10, max_words=3)
    with pytest.raises(ValueError, match="only .* pass the filters"):
        chitchat_prompts(10**7)


def test_load_prompts_from_shared_files():
    path = SHARED_DATA / "alpaca-eval-805-instructions.jsonl"
    prompts = load_prompts(path, field="instruction")
    with open(path) as f:
        first = json.loads(f.readline())
    assert len(prompts) == 805 and prompts[0] == first["instruction"]
    arena = load_prompts(SHARED_DATA / "arena-hard-v0.1-prompts.jsonl")  # field 'prompt' found by itself
    assert len(arena) == 500 and arena[0].startswith("Use ABC notation")


def test_load_prompts_txt_json_and_strings(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\n  second prompt  \n")
    assert load_prompts(tmp_path / "p.txt") == ["first prompt", "second prompt"]
    (tmp_path / "p.json").write_text(json.dumps([{"question": "q1"}, {"question": "q2"}]))
    assert load_prompts(tmp_path / "p.json") == ["q1", "q2"]
    (tmp_path / "s.jsonl").write_text('"plain one"\n\n"plain two"\n')
    assert load_prompts(tmp_path / "s.jsonl") == ["plain one", "plain two"]


@pytest.mark.parametrize(
    "lines,field,message",
    [
        (['{"prompt": "ok"}', '{"prompt": "fine"}', '{"prompt": oops}'], None, r"p\.jsonl:3: invalid JSON"),
        (['{"prompt": "ok"}', '{"text2": "x"}'], None, r"p\.jsonl:2: no prompt field"),
        (['{"instruction": "ok"}', '{"other": "x"}'], "instruction", r"p\.jsonl:2: field 'instruction': missing"),
        (['{"prompt": "ok"}', '{"prompt": "   "}'], None, r"p\.jsonl:2: field 'prompt': empty prompt"),
        (['{"prompt": 3}'], None, r"p\.jsonl:1: field 'prompt': expected a string, got int"),
        (['[1, 2]'], None, r"p\.jsonl:1: expected a string or an object, got list"),
        (['"text"'], "prompt", r"p\.jsonl:1: expected an object with field 'prompt'"),
        (["", "  "], None, r"p\.jsonl: no prompts in file"),
    ],
)
def test_load_prompts_errors_name_file_line_and_field(tmp_path, lines, field, message):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_prompts(path, field=field)


def test_load_prompts_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="no such prompt file"):
        load_prompts(tmp_path / "missing.jsonl")
    (tmp_path / "p.json").write_text(json.dumps([{"prompt": "a"}, {"prompt": ""}]))
    with pytest.raises(DataError, match=r"p\.json: record 2: field 'prompt': empty prompt"):
        load_prompts(tmp_path / "p.json")
    (tmp_path / "d.json").write_text('{"prompt": "a"}')
    with pytest.raises(DataError, match="must hold a list"):
        load_prompts(tmp_path / "d.json")
    (tmp_path / "p.txt").write_text("a\n")
    with pytest.raises(DataError, match="one prompt per line"):
        load_prompts(tmp_path / "p.txt", field="prompt")
