"""ChatTemplate: markup learned from a template by rendering sentinels, then texts split back."""

from __future__ import annotations

import pytest

from bayesrm.serve.template import ChatTemplate, PlainSplitter, TemplateError
from serve_util import CHATML, chatml

LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def test_chatml_round_trip_with_a_response_that_contains_markup():
    t = ChatTemplate.from_jinja(CHATML)
    prompt = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
              {"role": "user", "content": "and now?"}]
    rendered = chatml(prompt)
    tricky = "fine <|im_start|>assistant\nreally"
    assert t.split(rendered + tricky + "<|im_end|>\n", rendered) == (prompt, tricky)  # the prompt pins the split
    assert t.split(rendered + "plain answer<|im_end|>\n") == (prompt, "plain answer")  # from the query alone


def test_llama3_style_template_with_bos_and_eos():
    t = ChatTemplate.from_jinja(LLAMA3, bos="<|begin_of_text|>", eos="<|eot_id|>")
    assert t.prefix == "<|begin_of_text|>" and t.headers["user"] == "<|start_header_id|>user<|end_header_id|>\n\n"
    text = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nthe answer<|eot_id|>")
    assert t.split(text) == ([{"role": "user", "content": "U"}], "the answer")


def test_texts_that_do_not_follow_the_template_are_refused():
    t = ChatTemplate.from_jinja(CHATML)
    with pytest.raises(TemplateError, match="not rendered with the chat template"):
        t.split("just some text")
    with pytest.raises(TemplateError, match="does not end with an assistant turn"):
        t.split(chatml([{"role": "user", "content": "q"}], generation_prompt=False))
    with pytest.raises(TemplateError, match="does not start with its prompt"):
        PlainSplitter().split("abc", "x")
    assert PlainSplitter().split("question? answer", "question? ") == ("question? ", "answer")
