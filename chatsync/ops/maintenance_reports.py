"""The maintenance reports' rendering and storage: Markdown from the reviews' figures, HTML through
Jinja2 (autoescaped) and markdown-it, charts with matplotlib; each report kept in the
``maintenance_reports`` table and written under ``reports_dir`` (``chatsync.ops.report_store``)."""

from __future__ import annotations

import logging
from datetime import datetime

from psycopg import sql
from psycopg.types.json import Jsonb

from chatsync.alerting import alerts
from chatsync.config import Settings
from chatsync.db.connection import connection
from chatsync.db.statements import ops_ident
from chatsync.ops import report_store

log = logging.getLogger("chatsync.maintenance")
J = sql.SQL


def delays_text(d: dict) -> str:
    if not d["events"]:
        return "no event synced"
    return f"p50 {d['p50_s']} s, p95 {d['p95_s']} s, p99 {d['p99_s']} s over {d['events']:,} events"


def daily_markdown(r: dict) -> str:
    s, p, res = r["sync_review"], r["performance"], r["resolution"]
    lines = [f"# chatsync daily report {r['interval'][0][:10]}", "",
             "## Sync log review", f"- events synced: {s['events']}, dead letters: {s['dead_letters']}, "
             f"failure rate: {'n/a' if s['failure_rate'] is None else s['failure_rate']}, "
             f"redeliveries: {s['redeliveries']}", "",
             "| event type | error class | count |", "|---|---|---|",
             *[f"| {x['type']} | {x['error_class']} | {x['count']} |" for x in s["failures"]], "",
             "| event type | outcome | events | redeliveries |", "|---|---|---|---|",
             *[f"| {x['type']} | {x['outcome']} | {x['events']} | {x['redeliveries']} |" for x in s["by_type"]], "",
             "Slowest syncs:", *[f"- {x['delay_s']} s — {x['type']} room {x['room_id']} user {x['user_id']} "
                                 f"({x['event_id']})" for x in s["slowest"]], "",
             "## Performance", f"- sync delay today: {delays_text(p['sync_delay'])}",
             f"- previous 7 days: {delays_text(p['sync_delay_previous_7_days'])}",
             *([f"- **regression** {x['metric']}: {x['value']} vs {x['baseline']} ({x['ratio']}×)"
                for x in p["regressions"]] or ["- no regression"]), "",
             "## Open inconsistencies", f"- open keys re-checked: {res['open_keys']}, still differing: "
             f"{res['still_differing']}, repaired: {res['repaired']}"
             + (f" (run {res['rechecked_run']})" if res["rechecked_run"] is not None else ""),
             *([f"- **recurring** {x['kind']} room {x['room_id']} user {x['user_id']}: found by {x['runs']} runs"
                for x in res["recurring"]] or ["- no recurring key"]),
             *domain_violations_markdown(r.get("room_domain_violations"))]
    return "\n".join(lines) + "\n"


def _table_cell(text: str) -> str:
    """A room's own text in a table cell's code span: a pipe would end the cell, a backtick the span."""
    return text.replace("|", "\\|").replace("`", "'")


def domain_violations_markdown(v: dict | None) -> list[str]:
    """The daily report's section on room values held back (outside their field's domain)."""
    if v is None:  # a report of a version before domains
        return []
    lines = ["", "## Room values outside their domain"]
    if not v["by_field"]:
        return [*lines, "- none held back"]
    lines += [f"- **held back** {v['keys']} keys: their room value is outside the mapping's domain, so the chat "
              "side was left as it was; fix the room data or widen the domain, then check again", "",
              "| entity | field | keys | recorded | runs | latest |", "|---|---|---|---|---|---|"]
    for x in v["by_field"]:
        latest = x["latest"]
        where = f"room {latest['room_id']}" + ("" if latest["user_id"] is None else f" user {latest['user_id']}")
        lines.append(f"| {x['entity']} | {x['field']} | {x['keys']} | {x['recorded']} | {x['runs']} | "
                     f"`{_table_cell(latest['value'])}` ({where}) |")
    return lines


def weekly_markdown(r: dict) -> str:
    e, ix, ret = r["errors"], r["indexes"], r["retention"]
    lines = [f"# chatsync weekly report {r['interval'][0][:10]} .. {r['interval'][1][:10]}", "",
             "## Errors of the week", "| error class | this week | previous week | trend |", "|---|---|---|---|",
             *[f"| {x['error_class']} | {x['this_week']} | {x['previous_week']} | {x['trend']} |"
               for x in e["top_errors"]],
             "", "## Indexes", ix.get("bloat_note", "bloat measured with pgstattuple (avg_leaf_density)"),
             *([f"- rebuilt {x['index']}: leaf density {x.get('leaf_density')} %, {x.get('bytes_before')} → "
                f"{x.get('bytes_after')} bytes" for x in ix["reindexed"]] or ["- nothing to rebuild"]),
             *[f"- unused (0 scans): {x['index']} ({x['bytes']} bytes)" for x in ix["unused"]],
             *[f"- duplicate: {x['index']} = {x['same_as']}" for x in ix["duplicates"]],
             *[f"- **reindex failed** {x['index']}: {x['error']}" for x in ix["failed"]],
             f"- analyzed: {', '.join(ix['analyzed'])}", "", "## Retention",
             "| table | older than | deleted | batches |", "|---|---|---|---|",
             *[f"| {t} | {v['older_than'][:10]} | {v['deleted']} | {v.get('batches', '')} |" for t, v in ret.items()]]
    return "\n".join(lines) + "\n"


def charts(settings: Settings, folder: tuple[str, ...], review: dict, cap: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    made = []
    days = review["days"]
    for key, title in (("events", "events synced per day"), ("delay_p95_s", "sync delay p95 (s), daily mean")):
        fig, ax = plt.subplots(figsize=(7, 2.6))
        ax.plot([d["day"][5:] for d in days], [d[key] or 0 for d in days], marker=".")
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=90, labelsize=7)
        fig.tight_layout()
        name = f"{key}.png"
        _save_chart(settings, folder, name, fig)
        made.append(name)
    fig, ax = plt.subplots(figsize=(7, 2.6))
    tables = sorted(cap, key=lambda t: -cap[t]["bytes_now"])[:8]
    ax.barh([t.split(".")[-1] for t in tables], [cap[t]["bytes_now"] / 2**20 for t in tables])
    ax.set_title("table size now (MiB)")
    fig.tight_layout()
    _save_chart(settings, folder, "table_sizes.png", fig)
    made.append("table_sizes.png")
    return made


def _save_chart(settings: Settings, folder: tuple[str, ...], name: str, fig) -> None:
    import io

    import matplotlib.pyplot as plt

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    report_store.write(settings, (*folder, name), png.getvalue())


def monthly_markdown(r: dict) -> str:
    a, v, rev, cap = r["audit"], r["audit"]["validation"], r["review"], r["capacity"]
    horizon = next((k for k in next(iter(cap.values()), {}) if k.startswith("projected")), "projected")
    lines = [f"# chatsync monthly report {r['interval'][0][:7]}", "",
             "## Full consistency audit",
             f"- run {a['run_id']}: {a['rows_to_change']} rows differ of {a['total_rows']} ({a['seconds']} s)",
             *[f"- {k}: {n}" for k, n in a["counts"].items() if n],
             f"- Great Expectations: {'passed' if v['passed'] else 'FAILED'} ({v['evaluated']} expectations)"
             + "".join(f"; failed {x}" for x in v["failed"]), f"- Data Docs: {v['docs_index']}", "",
             "## Performance of the month", f"- trends (second half vs first half): {rev['trend']}", "",
             "| day | events | dead letters | delay p95 (s) | open (max) |", "|---|---|---|---|---|",
             *[f"| {d['day']} | {d['events']} | {d['dead_letters']} | {d['delay_p95_s']} | {d['open_max']} |"
               for d in rev["days"]], "", "![events](events.png)", "![delay](delay_p95_s.png)", "",
             "## Capacity", f"| table | bytes now | bytes/day | {horizon.replace('_', ' ')} |", "|---|---|---|---|",
             *[f"| {t} | {c['bytes_now']} | {c['bytes_per_day']} | {c.get(horizon)} |" for t, c in sorted(cap.items())],
             "", "![table sizes](table_sizes.png)"]
    return "\n".join(lines) + "\n"


def report_html(markdown: str, title: str) -> str:
    """The report's Markdown as an HTML page: CommonMark with tables (markdown-it-py), raw HTML in
    the Markdown shown as text (the report quotes dead letters' reasons and error messages), in
    templates/report.html.j2."""
    import jinja2
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    env = jinja2.Environment(loader=jinja2.PackageLoader("chatsync.ops", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(title=title, body=Markup(body))


def store(settings: Settings, kind: str, start: datetime, end: datetime, report: dict, markdown: str,
           attention: bool, parts: tuple[str, ...] | None = None) -> dict:
    """The report in maintenance_reports and as Markdown (<kind>/<start>.md under reports_dir
    unless given)."""
    with connection(settings) as conn:
        conn.execute(J(
            "INSERT INTO {}.maintenance_reports (kind, interval_start, interval_end, report, markdown, attention) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (kind, interval_start) DO UPDATE SET "
            "interval_end = EXCLUDED.interval_end, report = EXCLUDED.report, markdown = EXCLUDED.markdown, "
            "attention = EXCLUDED.attention, written_at = clock_timestamp()").format(ops_ident(settings)),
            (kind, start, end, Jsonb(jsonable(report)), markdown, attention))
    parts = parts or (kind, f"{start:%Y-%m-%d}.md")
    path: object = "/".join(parts)
    try:
        path = report_store.write(settings, parts, markdown)
    except OSError as exc:  # the database copy is the record; the file is a convenience
        log.warning("could not write the report %s under %s: %s", path, report_store.root(settings), exc)
    if attention:
        alerts.notify(f"maintenance_{kind}", f"{kind} maintenance of {start:%Y-%m-%d} needs attention: "
                      + "; ".join(attention_lines(report)), interval_start=start.isoformat())
    return {"kind": kind, "interval_start": start.isoformat(), "attention": attention, "path": str(path),
            "report": jsonable(report)}


def attention_lines(report: dict) -> list[str]:
    out = []
    for x in report.get("performance", {}).get("regressions", []):
        out.append(f"regression {x['metric']} {x['value']} vs {x['baseline']}")
    for x in report.get("resolution", {}).get("recurring", []):
        out.append(f"recurring {x['kind']} room {x['room_id']} user {x['user_id']} ({x['runs']} runs)")
    for x in report.get("room_domain_violations", {}).get("by_field", []):
        out.append(f"room values outside the {x['field']} domain held back on {x['keys']} keys")
    for x in report.get("indexes", {}).get("failed", []):
        out.append(f"reindex failed {x['index']}: {x['error']}")
    return out[:20]


def jsonable(value):
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
