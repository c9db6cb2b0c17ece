"""Text transforms that prepare model inputs from record fields."""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Literal

from composer.records import Record
from composer.stages.base import Stage, require_field


class Template(Stage):
    """Format a prompt from record fields: `template: "Review: {text}\\nSentiment:"`.

    The fields it reads are the template's placeholders, so the planner can check that an
    upstream stage writes each of them.
    """

    def __init__(self, name: str, *, template: str, output_field: str = "prompt"):
        super().__init__(name, {"template": template, "output_field": output_field})
        placeholders = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        bad = [f for f in placeholders if not f.isidentifier()]
        if bad:
            raise ValueError(f"template placeholders must be plain field names, got {{{bad[0]}}}")
        self.template, self.output_field = template, output_field
        self.reads = tuple(dict.fromkeys(placeholders))
        self.writes = (output_field,)

    def process(self, records: list[Record]) -> list[Record]:
        for record in records:
            values = {field: require_field(record, field, self.name) for field in self.reads}
            record[self.output_field] = self.template.format(**values)
        return records


class Normalize(Stage):
    """Clean a text field: Unicode normalisation, whitespace, case."""

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
        output_field = output_field or field
        super().__init__(
            name,
            {
                "field": field, "output_field": output_field, "unicode_form": unicode_form, "strip": strip,
                "collapse_whitespace": collapse_whitespace, "lowercase": lowercase,
            },
        )
        if unicode_form not in (None, "NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(f"unicode_form must be NFC, NFKC, NFD, NFKD or null, got {unicode_form!r}")
        self.field, self.output_field = field, output_field
        self.unicode_form, self.strip, self.collapse, self.lowercase = unicode_form, strip, collapse_whitespace, lowercase
        self.reads, self.writes = (field,), (output_field,)

    def process(self, records: list[Record]) -> list[Record]:
        for record in records:
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
            record[self.output_field] = text
        return records
