"""The error every data loader raises for bad user input: it names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad preference data, located as precisely as the format allows.

    file:   the file or dataset directory (as the user gave it), or None.
    line:   1-based line number for line formats (JSONL), 1-based record number for record formats
            (JSON list, Parquet, Hugging Face datasets; then ``record=True``), or None for file-level errors.
    field:  the field (column) at fault, or None.
    reason: a short fixed key for counting skips by kind (e.g. ``"empty string"``), separate from
            ``detail``, the human-readable specifics.

    ``str(err)`` reads ``data.jsonl:17: field 'chosen': empty string`` (line formats) or
    ``data.parquet: record 17: field 'chosen': empty string`` (record formats).
    """

    def __init__(
        self,
        reason: str,
        detail: str | None = None,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        record: bool = False,
    ) -> None:
        self.reason = reason
        # one line, whatever a library's message held (the CLI prints errors as single lines)
        self.detail = " ".join(str(detail if detail is not None else reason).split())
        self.file = None if file is None else str(file)
        self.line = line
        self.field = field
        self.record = record
        super().__init__(self._format())

    @property
    def location(self) -> str:
        """``file:line`` (or ``file: record n``), whichever parts are known."""
        if self.line is None:
            return self.file or ""
        if self.record:
            return f"{self.file}: record {self.line}" if self.file else f"record {self.line}"
        return f"{self.file}:{self.line}" if self.file else f"line {self.line}"

    def _format(self) -> str:
        parts = [p for p in (self.location, f"field {self.field!r}" if self.field else "") if p]
        return ": ".join(parts + [self.detail])
