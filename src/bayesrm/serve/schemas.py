"""Request validation for the reward server: every bad input becomes a 4xx JSON error naming its field.

Errors are ``{"error": message, "field": name}`` with status 400 (malformed JSON), 401 (bearer
token), 409 (reward not ready), 413 (body, text or item count over the limits) or 422 (missing
field, wrong type). Everything is checked before a request joins a batch, so one bad request
never fails the batch it would have shared with others.
"""

from __future__ import annotations

import json
from typing import Any

from bayesrm.serve.config import ServeConfig
from bayesrm.types import Prompt

ROLES = ("system", "user", "assistant")


class InputError(Exception):
    """A request the server refuses: HTTP status, offending field (or None), message."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message

    def payload(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body (400 when it is not JSON, 422 when it is not an object)."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as err:
        raise InputError(400, "body", f"request body is not UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise InputError(400, "body", f"request body is malformed JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except (ValueError, RecursionError) as err:
        raise InputError(400, "body", f"request body is malformed JSON: {err}") from None
    if not isinstance(data, dict):
        raise InputError(422, "body", f"request body must be a JSON object, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)


class Limits:
    """The per-request limits of a ServeConfig."""

    def __init__(self, config: ServeConfig) -> None:
        self.max_items, self.max_chars = config.max_items, config.max_text_chars

    def text(self, value: Any, field: str) -> str:
        if not isinstance(value, str):
            raise InputError(422, field, f"'{field}' must be a string, got {_kind(value)}")
        if len(value) > self.max_chars:
            raise InputError(413, field, f"'{field}' has {len(value)} characters; at most {self.max_chars} are accepted")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(422, field, f"'{field}' contains an unpaired surrogate (not valid Unicode text)") from None
        return value

    def array(self, data: dict[str, Any], field: str, required: bool = True) -> list[Any] | None:
        if field not in data or data[field] is None:
            if required:
                raise InputError(422, field, f"missing field '{field}'")
            return None
        value = data[field]
        if not isinstance(value, list):
            raise InputError(422, field, f"'{field}' must be an array, got {_kind(value)}")
        if len(value) > self.max_items:
            raise InputError(413, field, f"'{field}' has {len(value)} items; at most {self.max_items} per request")
        return value

    def texts(self, data: dict[str, Any], field: str, required: bool = True) -> list[str] | None:
        values = self.array(data, field, required)
        return None if values is None else [self.text(v, f"{field}[{i}]") for i, v in enumerate(values)]

    def prompt(self, value: Any, field: str) -> Prompt:
        """A prompt: a string, or a list of {"role", "content"} chat messages."""
        if isinstance(value, str):
            return self.text(value, field)
        if not isinstance(value, list) or not value:
            raise InputError(422, field, f"'{field}' must be a string or a non-empty array of chat messages, got {_kind(value)}")
        if len(value) > self.max_items:
            raise InputError(413, field, f"'{field}' has {len(value)} messages; at most {self.max_items}")
        messages = []
        for j, message in enumerate(value):
            where = f"{field}[{j}]"
            if not isinstance(message, dict):
                raise InputError(422, where, f"'{where}' must be a chat message object, got {_kind(message)}")
            for key in ("role", "content"):
                if key not in message:
                    raise InputError(422, f"{where}.{key}", f"missing field '{where}.{key}'")
            role = self.text(message["role"], f"{where}.role")
            if role not in ROLES:
                raise InputError(422, f"{where}.role", f"'{where}.role' must be one of {list(ROLES)}, got {role!r}")
            messages.append({"role": role, "content": self.text(message["content"], f"{where}.content")})
        total = sum(len(m["content"]) for m in messages)
        if total > self.max_chars:
            raise InputError(413, field, f"'{field}' has {total} characters in all; at most {self.max_chars}")
        return messages

    def prompts(self, data: dict[str, Any], field: str) -> list[Prompt]:
        values = self.array(data, field)
        return [self.prompt(v, f"{field}[{i}]") for i, v in enumerate(values or [])]


def same_length(field: str, values: list[Any], reference_field: str, reference: list[Any]) -> None:
    if len(values) != len(reference):
        raise InputError(422, field, f"'{field}' has {len(values)} items but '{reference_field}' has {len(reference)}")


def flag(data: dict[str, Any], field: str, default: bool = False) -> bool:
    value = data.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InputError(422, field, f"'{field}' must be true or false, got {_kind(value)}")
    return value
