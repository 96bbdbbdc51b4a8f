"""One self-contained HTML page: inline CSS, PNG figures embedded as base64, no scripts, no fetches.

The page opens from a file, an e-mail attachment or a CI artifact and looks the same everywhere.
Everything inserted is escaped with :func:`html.escape` (model names and dataset categories are
user data).
"""

from __future__ import annotations

import base64
from html import escape

from pspo_eval.report.document import Figure, Report, Section
from pspo_eval.report.tables import Cell, Table

CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #0072B2; --soft: #f8fafc; --best: #e8f2fa; }
* { box-sizing: border-box; }
body { margin: 0; background: #eef0f3; color: var(--fg);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 24px auto; padding: 36px 48px 40px; background: #fff;
  border-radius: 10px; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -.01em; }
.subtitle { color: var(--muted); margin: 0 0 20px; }
h2 { font-size: 21px; margin: 44px 0 8px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15.5px; margin: 26px 0 8px; }
p { margin: 6px 0 10px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
nav.toc { display: flex; flex-wrap: wrap; gap: 6px 8px; margin: 0 0 18px; }
nav.toc a { font-size: 13px; padding: 3px 10px; border: 1px solid var(--line); border-radius: 999px; background: var(--soft); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin: 0 0 16px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 9px 13px; background: var(--soft); }
.card .label { font-size: 11.5px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
.card .value { font-size: 17px; font-weight: 600; overflow-wrap: anywhere; }
.card .value.long { font-size: 14px; }
.warning { border-left: 4px solid #E69F00; background: #fff8eb; padding: 8px 12px; margin: 8px 0; font-size: 14px; }
.note { color: var(--muted); font-style: italic; }
.table-wrap { overflow-x: auto; margin: 4px 0 2px; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
thead th { border-top: 2px solid #111827; border-bottom: 1px solid #111827; padding: 6px 12px; font-weight: 600;
  background: #fff; white-space: nowrap; }
tbody td { padding: 5px 12px; border-bottom: 1px solid var(--line); vertical-align: top; white-space: nowrap; }
tbody tr:last-child td { border-bottom: 2px solid #111827; }
tbody tr:hover td { background: #fafafa; }
th.r, td.r { text-align: right; } th.l, td.l { text-align: left; }
td.r { white-space: nowrap; }
td.best { font-weight: 700; background: var(--best); }
.ci { display: block; color: var(--muted); font-size: 11px; font-weight: 400; line-height: 1.25; }
tr.group td { background: var(--soft); color: #374151; font-size: 11.5px; font-weight: 600; text-transform: uppercase;
  letter-spacing: .05em; padding-top: 7px; }
.caption { color: var(--muted); font-size: 13px; max-width: 900px; margin: 6px 0 0; }
figure { margin: 18px 0 8px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
footer { margin-top: 48px; padding-top: 12px; border-top: 2px solid var(--line); font-size: 12.5px; color: #374151; }
footer h2 { font-size: 17px; border: 0; margin: 8px 0; }
footer table { font-size: 12px; margin-bottom: 10px; }
footer code, td code { font-size: 11.5px; background: var(--soft); padding: 1px 4px; border-radius: 3px; }
@media print { body { background: #fff; } main { box-shadow: none; margin: 0; } }
"""


def _cell_html(cell: Cell, align: str) -> str:
    classes = [align] + (["best"] if cell.bold else [])
    style = ""
    if cell.shade is not None and not cell.bold:
        style = f' style="background: rgba(0,114,178,{0.06 + 0.30 * max(0.0, min(1.0, cell.shade)):.3f})"'
    title = f' title="{escape(cell.title)}"' if cell.title else ""
    sub = f'<span class="ci">{escape(cell.sub)}</span>' if cell.sub else ""
    return f'<td class="{" ".join(classes)}"{style}{title}>{escape(cell.text)}{sub}</td>'


def table_html(table: Table) -> str:
    head = "".join(f'<th class="{a}">{escape(c)}</th>' for c, a in zip(table.columns, table.align))
    body = []
    for i, row in enumerate(table.rows):
        if i in table.groups:
            body.append(f'<tr class="group"><td colspan="{len(table.columns)}">{escape(table.groups[i])}</td></tr>')
        body.append("<tr>" + "".join(_cell_html(c, a) for c, a in zip(row, table.align)) + "</tr>")
    caption = f'<p class="caption">{escape(table.caption)}</p>' if table.caption else ""
    return (f'<h3 id="table-{escape(table.name)}">{escape(table.title)}</h3>\n<div class="table-wrap"><table>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>{caption}")


def figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (f'<figure id="figure-{escape(fig.name)}"><img alt="{escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(fig.caption or fig.title)}</figcaption></figure>")


def _section_html(section: Section) -> str:
    parts = [f'<section id="{escape(section.id)}"><h2>{escape(section.title)}</h2>']
    if section.intro:
        parts.append(f"<p>{escape(section.intro)}</p>")
    for note in section.notes:
        parts.append(f'<p class="note">{escape(note)}</p>')
    for table in section.tables:
        parts.append(table_html(table))
    for fig in section.figures:
        parts.append(figure_html(fig))
    parts.append("</section>")
    return "\n".join(parts)


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f'<tr><td class="l">{escape(k)}</td><td class="l">{v}</td></tr>' for k, v in rows)
    return f'<div class="table-wrap"><table><tbody>{body}</tbody></table></div>'


def _code(value: object, length: int | None = None) -> str:
    text = "—" if value is None else str(value)
    short = text if length is None or len(text) <= length else text[:length] + "…"
    return f'<code title="{escape(text)}">{escape(short)}</code>'


def provenance_html(report: Report) -> str:
    prov = report.provenance
    parts = ['<footer id="provenance"><h2>Provenance</h2>']
    runs = prov.get("runs", [])
    if runs:
        head = "".join(f'<th class="l">{h}</th>' for h in ("Run", "Path", "Config hash", "Git revision", "Samples",
                                                           "Status", "Ended"))
        body = "".join(
            "<tr>" + "".join(f'<td class="l">{v}</td>' for v in (
                escape(r["name"]), _code(r["path"]), _code(r.get("config_hash")), _code(r.get("git_revision"), 14),
                escape(str(r.get("samples"))), escape(str(r.get("status"))), escape(str(r.get("ended") or "—")))) + "</tr>"
            for r in runs)
        parts.append(f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        checksums: dict[str, str] = {}
        versions: dict[str, str] = {}
        for r in runs:
            for k, v in (r.get("dataset_checksums") or {}).items():
                checksums.setdefault(k, v)
            for k, v in (r.get("versions") or {}).items():
                versions.setdefault(k, v)
        rows = [(f"dataset {k}", _code(v, 16)) for k, v in checksums.items()]
        rows += [(k, escape(str(v))) for k, v in versions.items()]
        if rows:
            parts.append(_kv_table(rows))
    judges = prov.get("judges", [])
    if judges:
        parts.append(_kv_table([(f"judge {j['judge']}", f"rubric {escape(str(j['rubric']))} v{escape(str(j['rubric_version']))} "
                                 f"{_code(j.get('rubric_hash'), 12)}, {j['items']} items")
                                for j in judges]))
    training = prov.get("training", [])
    if training:
        parts.append(_kv_table([(f"training {t['label']}", f"{_code(t['path'])} objective {escape(str(t.get('objective')))}, "
                                 f"config {_code(t.get('config_hash'))}, {t.get('steps')} steps") for t in training]))
    parts.append(f"<p>Generated by pspo-eval {escape(str(prov.get('pspo_eval')))} at {escape(str(prov.get('generated')))}. "
                 "Every number above is computed from the records of the runs listed here; the tables are also in "
                 "tables/*.csv (unrounded) and tables/*.tex.</p></footer>")
    return "\n".join(parts)


def report_html(report: Report) -> str:
    toc = "".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in report.sections)
    toc += '<a href="#provenance">Provenance</a>'
    cards = "".join(f'<div class="card"><div class="label">{escape(k)}</div>'
                    f'<div class="value{" long" if len(v) > 14 else ""}">{escape(v)}</div></div>'
                    for k, v in report.highlights)
    warnings = "".join(f'<div class="warning">{escape(w)}</div>' for w in report.warnings)
    sections = "\n".join(_section_html(s) for s in report.sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(report.title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<h1>{escape(report.title)}</h1>
<p class="subtitle">{escape(report.subtitle)}</p>
<nav class="toc">{toc}</nav>
<div class="cards">{cards}</div>
{warnings}
</header>
{sections}
{provenance_html(report)}
</main>
</body>
</html>
"""
