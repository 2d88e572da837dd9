"""Split rendered chat texts into (prompt messages, response) with the policy's chat template.

RL frameworks send the reward server what the policy saw and wrote as one string: OpenRLHF's
``query`` is the rendered prompt followed by the response, verl's /classify ``input`` is the whole
rendered conversation. A bayesrm scorer wants the prompt (as chat messages, which it renders with
its own backbone's template) and the response text separately.

:class:`ChatTemplate` learns the template's markup by rendering a probe conversation whose contents
are sentinels: each role's header (text right before a message) and suffix (right after it).
:meth:`ChatTemplate.parse` then reads a rendered text back into messages, and
:meth:`ChatTemplate.split` takes the last assistant turn as the response (its end-of-turn suffix
and the EOS token stripped). With ``chat_template='none'`` prompts are plain text and the response
is the query minus its prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bayesrm.types import Message, Prompt

_S, _U, _A, _U2 = "QqSYSTEMqQ", "QqUSERqQ", "QqASSISTANTqQ", "QqSECONDqQ"


class TemplateError(ValueError):
    """A text that the chat template cannot split (names the offending field in the server)."""


def _between(text: str, left: str, right: str) -> str:
    start = text.index(left) + len(left)
    return text[start : text.index(right, start)]


@dataclass
class ChatTemplate:
    """The markup of a chat template: ``headers[role]`` before and ``suffixes[role]`` after each message."""

    headers: dict[str, str]
    suffixes: dict[str, str]
    prefix: str = ""
    eos: str | None = None

    @classmethod
    def learn(cls, render: Callable[[list[Message], bool], str], bos: str | None = None, eos: str | None = None) -> "ChatTemplate":
        """Read the markup off ``render(messages, add_generation_prompt)`` (e.g. a tokenizer's template)."""
        user, asst = {"role": "user", "content": _U}, {"role": "assistant", "content": _A}
        second = {"role": "user", "content": _U2}
        t_ua = render([user, asst], False)
        t_uau = render([user, asst, second], False)
        t_u = render([user], False)
        user_suffix = t_u[t_u.index(_U) + len(_U) :]
        asst_suffix = t_ua[t_ua.index(_A) + len(_A) :]
        mid_ua = _between(t_ua, _U, _A)
        mid_au = _between(t_uau, _A, _U2)
        if not (mid_ua.startswith(user_suffix) and mid_au.startswith(asst_suffix)):
            raise TemplateError("cannot read this chat template's markup (turn suffixes are not role-stable)")
        headers = {"assistant": mid_ua[len(user_suffix) :], "user": mid_au[len(asst_suffix) :]}
        suffixes = {"user": user_suffix, "assistant": asst_suffix}
        prefix = ""
        try:
            t_su = render([{"role": "system", "content": _S}, user], False)
            mid_su = _between(t_su, _S, _U)
            if mid_su.endswith(headers["user"]):
                suffixes["system"] = mid_su[: len(mid_su) - len(headers["user"])]
                head = t_su[: t_su.index(_S)]
                if bos and head.startswith(bos) and not headers["user"].startswith(bos):
                    head, prefix = head[len(bos) :], bos  # a BOS token before the first turn only
                headers["system"] = head
        except Exception:  # a template that rejects system messages: parse user / assistant turns only
            pass
        if not headers["user"] or not headers["assistant"]:
            raise TemplateError("this chat template does not mark user and assistant turns apart")
        if bos and not prefix and t_u.startswith(bos) and not headers["user"].startswith(bos):
            prefix = bos
        return cls(headers=headers, suffixes=suffixes, prefix=prefix, eos=eos)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "ChatTemplate":
        """The template of a Hugging Face tokenizer (its ``chat_template``)."""
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(f"tokenizer {type(tokenizer).__name__} has no chat template; use chat_template='none'")

        def render(messages: list[Message], gen: bool) -> str:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)

        return cls.learn(render, bos=tokenizer.bos_token, eos=tokenizer.eos_token)

    @classmethod
    def from_jinja(cls, source: str, bos: str | None = None, eos: str | None = None) -> "ChatTemplate":
        """A template given as Jinja source (rendered the way transformers renders chat templates)."""
        from transformers.utils.chat_template_utils import render_jinja_template

        def render(messages: list[Message], gen: bool) -> str:
            texts, _ = render_jinja_template(
                [messages], chat_template=source, add_generation_prompt=gen, bos_token=bos or "", eos_token=eos or ""
            )
            return texts[0]

        return cls.learn(render, bos=bos, eos=eos)

    # ---- reading rendered texts -----------------------------------------------------------
    def parse(self, text: str) -> tuple[list[Message], bool]:
        """(messages, last_turn_open): the messages of a rendered conversation; the last one may be
        an open turn (no end-of-turn suffix yet, e.g. a prompt ending in the assistant header)."""
        pos = len(self.prefix) if self.prefix and text.startswith(self.prefix) else 0
        roles = sorted(self.headers, key=lambda r: -len(self.headers[r]))  # longest header first
        messages: list[Message] = []
        while pos < len(text):
            role = next((r for r in roles if text.startswith(self.headers[r], pos)), None)
            if role is None:
                if text[pos:].strip() == "" or (self.eos and text[pos:].strip() == self.eos.strip()):
                    break
                raise TemplateError(
                    f"text is not rendered with the chat template: at character {pos} expected one of "
                    f"{[self.headers[r] for r in roles]}, found {text[pos:pos + 30]!r}"
                )
            start = pos + len(self.headers[role])
            end = text.find(self.suffixes[role], start) if self.suffixes[role] else -1
            if end < 0:
                messages.append({"role": role, "content": self._strip_end(text[start:], role)})
                return messages, True
            messages.append({"role": role, "content": text[start:end]})
            pos = end + len(self.suffixes[role])
        return messages, False

    def _strip_end(self, response: str, role: str = "assistant") -> str:
        """A response without its trailing end-of-turn suffix and EOS token."""
        for marker in (self.suffixes.get(role, ""), self.eos or "", self.suffixes.get(role, "").rstrip()):
            if marker and response.endswith(marker):
                response = response[: -len(marker)]
        return response

    def split(self, query: str, prompt: str | None = None) -> tuple[list[Message], str]:
        """(prompt messages, response) of one rendered query. When the rendered prompt is given and
        the query starts with it, the response is exactly what follows it (robust to responses that
        contain template markup); otherwise the last assistant turn of the query is the response."""
        if prompt is not None and query.startswith(prompt):
            messages, open_turn = self.parse(prompt)
            if open_turn and messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
                messages = messages[:-1]
            if not messages:
                raise TemplateError("the prompt holds no chat message")
            return messages, self._strip_end(query[len(prompt) :])
        messages, _ = self.parse(query)
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise TemplateError("the text does not end with an assistant turn after a prompt")
        return messages[:-1], messages[-1]["content"]


class PlainSplitter:
    """``chat_template='none'``: the prompt is plain text, the response is the query minus its prompt."""

    def split(self, query: str, prompt: str | None = None) -> tuple[Prompt, str]:
        if prompt is None:
            raise TemplateError("with chat_template='none' the prompt must be given beside the query")
        if not query.startswith(prompt):
            raise TemplateError("the query does not start with its prompt")
        return prompt, query[len(prompt) :]


def load_splitter(spec: str) -> ChatTemplate | PlainSplitter:
    """'none', 'smollm2' (the embedded policy), a tokenizer directory, or a .jinja file."""
    if spec == "none":
        return PlainSplitter()
    path = Path(spec)
    if path.suffix == ".jinja" and path.is_file():
        return ChatTemplate.from_jinja(path.read_text())
    from transformers import AutoTokenizer

    from bayesrm.models.policy import resolve_policy

    location = resolve_policy(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
    except OSError as err:
        raise ValueError(f"chat_template {spec!r}: not 'none', 'smollm2', a tokenizer directory or a .jinja file ({err})") from err
    return ChatTemplate.from_tokenizer(tokenizer)
