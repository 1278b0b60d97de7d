"""One self-contained HTML file: the figures embedded as base64 PNGs, tables, inline CSS; no script, no link to
anything outside the file, so it opens offline and can be mailed. Rendered with jinja2 (autoescaped: ids, sources
and file names come from user data)."""

from __future__ import annotations

import base64
import math

import jinja2

from edgeprm.report.data import ReportData
from edgeprm.report.figures import Figure

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>edgeprm report: {{ name }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.meta { color: #666; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.92rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; max-width: 900px; }
</style>
</head>
<body>
<h1>edgeprm report</h1>
<p class="meta">{{ path }} &middot; {{ rows }} rows &middot; ranked by <code>{{ opts.score_field }}</code>
{%- if opts.score_field == "reasonflux" %} (&alpha; = {{ opts.alpha }}){% endif %} &middot; doubt line
{{ opts.doubt }} &middot; sources by <code>{{ by }}</code></p>

<h2>Sources</h2>
<table id="sources">
<tr><th>source</th><th>rows</th><th>scored</th><th>mean score</th><th>median score</th>
{%- if labelled %}<th>correct</th>{% endif %}</tr>
{%- for s in sources %}
<tr data-source="{{ s.name }}" data-rows="{{ s.rows }}"><td>{{ s.name }}</td><td>{{ s.rows }}</td>
<td>{{ s.scored }}</td>
<td>{{ fmt(s.mean) }}</td><td>{{ fmt(s.median) }}</td>
{%- if labelled %}<td>{{ pct(s.correct) }}</td>{% endif %}</tr>
{%- endfor %}
</table>

{%- if bon %}
<h2>Best-of-N</h2>
<table id="best-of-n">
<tr><th>N</th><th>problems</th><th>PRM pick</th><th>random pick</th><th>oracle</th></tr>
{%- for r in bon %}
<tr data-n="{{ r.n }}"><td>{{ r.n }}</td><td>{{ r.groups }}</td><td>{{ pct(r.prm) }}</td><td>{{ pct(r.random) }}</td>
<td>{{ pct(r.oracle) }}</td></tr>
{%- endfor %}
</table>
{%- endif %}

{%- for f in figures %}
<h2>{{ f.title }}</h2>
<figure id="fig-{{ f.name }}">
<img alt="{{ f.title }}" src="data:image/png;base64,{{ b64(f.png) }}">
<figcaption>{{ f.caption }}</figcaption>
</figure>
{%- endfor %}
<p class="meta">Written by edgeprm report.</p>
</body>
</html>
"""


def _fmt(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def render(d: ReportData, figures: list[Figure], name: str) -> str:
    """The report as one HTML string."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    by = d.options.by or "source / generator / model field"
    if d.options.by_pattern:
        by += f" matched by {d.options.by_pattern!r}"
    return env.from_string(TEMPLATE).render(
        name=name, path=d.path, rows=d.rows, opts=d.options, by=by, sources=d.sources, labelled=d.has_labels,
        bon=d.best_of_n, figures=figures, fmt=_fmt, pct=_pct, b64=lambda b: base64.b64encode(b).decode("ascii"))
