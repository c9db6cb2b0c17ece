"""Text transforms that prepare model inputs from record fields."""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Literal

from composer.records import Record
from composer.stages.base import FieldStage, Stage, require_field


class Template(Stage):
    """Format a prompt from record fields: `template: "Review: {text}\\nSentiment:"`.

    The fields it reads are the template's placeholders, so the planner can check that an
    upstream stage writes each of them.
    """

    prefetchable = True  # cheap and thread-safe: runs in the prefetch thread, ahead of the model

    def __init__(self, name: str, *, template: str, output_field: str = "prompt"):
        super().__init__(name)
        placeholders = _placeholders(template)
        bad = [f for f in placeholders if not f.isidentifier()]
        if bad:
            hint = " (name the field, e.g. {text})" if bad[0] == "" else ""
            raise ValueError(f"template placeholders must be plain field names, got {{{bad[0]}}}{hint}")
        self.template, self.output_field = template, output_field
        self.reads = tuple(dict.fromkeys(placeholders))
        self.writes = (output_field,)

    def process(self, records: list[Record]) -> list[Record]:
        # Format every record before writing any: a failed batch is retried record by record,
        # and a record already written (e.g. output_field=text) would be templated twice.
        prompts = [self.template.format(**{f: self._value(r, f) for f in self.reads}) for r in records]
        for record, prompt in zip(records, prompts):
            record[self.output_field] = prompt
        return records

    def _value(self, record: Record, field: str) -> str | int | float:
        """A field's value for the template: text or a number. A list, a mapping or null would
        be formatted as its repr ("['a', 'b']", "None"), a prompt nobody meant: that record fails."""
        value = require_field(record, field, self.name)
        if isinstance(value, (str, int, float)):
            return value
        kind = "null" if value is None else type(value).__name__
        raise TypeError(f"record {record.get('id')!r}: field {field!r} is {kind}, not text or a number; "
                        f"stage {self.name!r} puts it into its template")


def _placeholders(template: str) -> list[str]:
    """Every replacement field name, including `{}` (as '') and those nested in format specs."""
    names: list[str] = []
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is not None:
            names.append(field)
        if spec and "{" in spec:
            names.extend(_placeholders(spec))
    return names


class Normalize(FieldStage):
    """Clean a text field: Unicode normalisation, whitespace, case."""

    prefetchable = True  # cheap and thread-safe: runs in the prefetch thread, ahead of the model

    def __init__(
        self,
        name: str,
        *,
        field: str = "text",
        output_field: str | None = None,
        unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = "NFKC",
        strip: bool = True,
        collapse_whitespace: bool = True,
        lowercase: bool = False,
    ):
        super().__init__(name, field, output_field)
        if unicode_form not in (None, "NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(f"unicode_form must be NFC, NFKC, NFD, NFKD or null, got {unicode_form!r}")
        self.unicode_form, self.strip, self.collapse, self.lowercase = unicode_form, strip, collapse_whitespace, lowercase

    def compute(self, record: Record) -> str:
        text = require_field(record, self.field, self.name)
        if not isinstance(text, str):
            raise TypeError(f"record {record['id']!r}: field {self.field!r} is {type(text).__name__}, not text")
        if self.unicode_form:
            text = unicodedata.normalize(self.unicode_form, text)
        if self.collapse:
            text = re.sub(r"\s+", " ", text)
        if self.strip:
            text = text.strip()
        if self.lowercase:
            text = text.lower()
        return text
