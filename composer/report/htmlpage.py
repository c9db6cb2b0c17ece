"""report.html: the report's sections as one self-contained page (inline CSS, plots linked
beside it), every text escaped since labels, configs and error messages come from the runs."""

from __future__ import annotations

import html
from collections.abc import Sequence

from composer.report.names import REPORT_MD, SUMMARY
from composer.report.sections import Section

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;color:#222;max-width:80rem}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem;font-size:0.9rem}
th,td{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
figure{display:inline-block;margin:0 1rem 1rem 0}img{max-width:100%;border:1px solid #ddd}
.generated{color:#666;font-size:0.85rem}"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def render_html(title: str, stamp: str, sections: Sequence[Section], count: str) -> str:
    """The whole of report.html; `stamp` is its only text that depends on when it was written."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>',
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="generated">Generated: {html.escape(stamp)}</p>',
        f'<p>{html.escape(count)} Files: <a href="{SUMMARY}">summary.csv</a>, <a href="{REPORT_MD}">report.md</a>.</p>',
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        if section.table:
            parts.append(_html_table(*section.table).rstrip("\n"))
        for image, caption in section.images:
            parts.append(f'<figure><a href="{html.escape(image)}"><img src="{html.escape(image)}" alt="{html.escape(caption)}">'
                         f"</a><figcaption>{html.escape(caption)}</figcaption></figure>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
