"""report.md: the report's sections as GitHub-flavoured markdown (readable as plain text too)."""

from __future__ import annotations

from collections.abc import Sequence

from composer.report.names import REPORT_HTML, SUMMARY
from composer.report.sections import Section


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")  # a cell's | or newline would break the row

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(title: str, stamp: str, sections: Sequence[Section], count: str) -> str:
    """The whole of report.md; `stamp` is its only line that depends on when it was written."""
    parts = [f"# {title}\n", f"_Generated: {stamp}_\n", f"{count} Files: [summary.csv]({SUMMARY}), [report.html]({REPORT_HTML}).\n"]
    for section in sections:
        parts.append(f"## {section.title}\n")
        if section.text:
            parts.append(section.text + "\n")
        if section.table:
            parts.append(_md_table(*section.table))
        for image, caption in section.images:
            parts.append(f"![{caption}]({image})\n")
    return "\n".join(parts)
