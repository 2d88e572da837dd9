"""The preference record every loader produces and every trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass

from bayesrm.types import Prompt


@dataclass(frozen=True)
class PreferencePair:
    """One human (or gold-judge) preference: ``chosen`` was preferred to ``rejected`` for ``prompt``.

    prompt:   plain text or a list of chat messages.
    margin:   optional preference strength, used by the Bradley-Terry loss with margin.
    source:   where it came from (``file:line``), for error messages and provenance.
    """

    prompt: Prompt
    chosen: str
    rejected: str
    margin: float | None = None
    source: str = ""
