"""report.json -> one self-contained report.html (inline CSS and SVG; no scripts, no network).

The page is a pure function of the JSON: `render(json.loads(report_json))` is what the CLI writes,
so the numbers on the page are exactly the numbers in the file.
"""

from __future__ import annotations

from html import escape

from facecorpus.reports import plots

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ddd;padding:.2em .5em;vertical-align:top}
th{background:#f4f4f4;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.flag td{background:#fff4e5} .ok{color:#2a7a2a} .diff{color:#b35900;font-weight:600}
.bar{display:inline-block;height:.8em;background:#4c78a8;vertical-align:middle;margin-right:.4em}
details{margin:.3em 0} summary{cursor:pointer;font-weight:600} .muted{color:#777} svg{max-width:100%;height:auto}
"""


def _n(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return escape(str(value))


def _table(head: list[str], rows: list[list], flags: list[bool] | None = None) -> str:
    out = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="flag"' if flags and flags[i] else ""
        cells = "".join(f'<td class="n">{_n(c)}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
                        else f"<td>{c if isinstance(c, _Raw) else _n(c)}</td>" for c in row)
        out.append(f"<tr{cls}>{cells}</tr>")
    return "".join(out) + "</table>"


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _figure(figs: dict, plot: str) -> str:
    svg = figs[plot]
    return f'<figure data-plot="{plot}">{svg}</figure>' if svg else '<p class="muted">Nothing to plot in this manifest.</p>'


def _overview(r: dict, figs: dict) -> str:
    t = r["totals"]
    rows = [[x["dataset"], x["kind"], x["records"], x["paper_text"], x["difference"],
             _Raw("<br>".join((['<span class="ok">matches (rounded)</span>'] if x["matches_paper"] else [])
                              + [f'<span class="diff">{escape(s)}</span>' for s in x["reasons"]]))]
            for x in r["table1"]]
    total_paper = sum(x["paper"] for x in r["table1"])
    return (f"<p>{_n(t['records'])} records of {_n(t['images'])} images ({_n(t['photos'])} photographs) from "
            f"{t['datasets']} datasets; the paper's Table 1 sums to {_n(total_paper)}.</p>"
            + _table(["dataset", "Table 1 kind", "records of that kind", "Table 1", "difference", "why"], rows,
                     [not x["matches_paper"] for x in r["table1"]])
            + _kinds(r["records"]) + _figure(figs, "records"))


def _kinds(records: dict) -> str:
    kinds = sorted({k for v in records.values() for k in v})
    return _table(["dataset", *kinds], [[d, *[v.get(k, 0) for k in kinds]] for d, v in records.items()])


def _splits(r: dict, figs: dict) -> str:
    s = r["splits"]
    splits = list(s["records"])
    out = _table(["", *splits], [["records", *s["records"].values()], ["unique images", *s["images"].values()]])
    out += _table(["dataset", *[f"{x} records / images" for x in splits]],
                  [[d, *[_Raw(f"{_n(v.get(x, {}).get('records', 0))} / {_n(v.get(x, {}).get('images', 0))}") for x in splits]]
                   for d, v in s["by_dataset"].items()])
    out += "<h3>Split reassignments by harmonization</h3>"
    out += (_table(["dataset", "decided by", "from", "to", "records"],
                   [[x["dataset"], x["decided_by"], x["from"], x["to"], x["count"]] for x in s["reassigned"]])
            if s["reassigned"] else '<p class="muted">None recorded in summary.json.</p>')
    sp = r["shared_photos"]
    out += f"<h3>Photos shared between datasets</h3><p>{_n(sp['photos_in_several'])} photographs appear in more than one dataset.</p>"
    out += _table(["datasets", "photos"], [[" + ".join(p["datasets"]), p["photos"]] for p in sp["pairs"]])
    return out + _figure(figs, "splits")


def _attributes(r: dict) -> str:
    out = []
    for dataset, attrs in r["attributes"].items():
        rows = []
        for name, a in attrs.items():
            total = max(a["records"], 1)
            vals = [f'<span class="bar" style="width:{80 * n / total:.0f}px"></span>{_n(v)} ({_n(n)})' for v, n in a["top"]]
            if a["other"]:
                vals.append(f"<i>other</i> ({_n(a['other'])}, {a['distinct'] - len(a['top'])} values)")
            rows.append([name, a["type"], a["records"], a["missing"], a["distinct"], _Raw("<br>".join(vals))])
        out.append(f"<details><summary>{escape(dataset)} ({len(attrs)} attributes)</summary>"
                   + _table(["attribute", "type", "records", "missing", "distinct", "top values"], rows) + "</details>")
    return "".join(out) or '<p class="muted">No labelled records.</p>'


def _axes(figs: dict) -> str:
    return ("<h3>Age</h3>" + _figure(figs, "ages") + "<h3>Expression</h3>" + _figure(figs, "expressions")
            + "<h3>Gender</h3>" + _figure(figs, "gender") + "<h3>Race</h3>" + _figure(figs, "race")
            + "<h3>FS2K colours</h3>" + _figure(figs, "colors"))


def _length_row(dataset, kind: str, words: dict, ids: dict) -> list:
    return [dataset, kind, ids["records"], words["p50"], words["max"], ids["p50"], ids["p99"], ids["max"],
            ids["over_budget"], _Raw(f"{ids['over_budget_share']:.2%}")]


def _lengths(r: dict, figs: dict) -> str:
    L = r["lengths"]
    rows = [_length_row(d, kind, v["words"], v["wordpiece"]) for d, kinds in L["by_dataset"].items() for kind, v in kinds.items()]
    rows += [_length_row(_Raw("<b>all</b>"), kind, L["words"][kind], L["wordpiece"][kind]) for kind in L["wordpiece"]]
    return (f"<p>A {L['sequence_length']}-token sequence leaves {L['budget']} WordPiece ids for text. Captions over it are "
            "cut; attribute targets over it are trained as random subsets of their pairs that fit.</p>"
            + _table(["dataset", "kind", "records", "words p50", "words max", "ids p50", "ids p99", "ids max",
                      f"over {L['budget']}", "share over"], rows) + _figure(figs, "lengths"))


def _filters(r: dict) -> str:
    f = r["filters"]
    if not f["summary_found"]:
        out = '<p class="diff">summary.json is missing: filters and reassignments are unknown.</p>'
    else:
        rows = [[d, v["rows_read"], v["records"], v["manifest_records"],
                 _Raw("yes" if v["records_match"] else '<span class="diff">no</span>'),
                 ", ".join(f"{k}: {n:,}" for k, n in v["filtered"].items()) or "—", v["errors"], "; ".join(v["notes"]) or "—",
                 _Raw(escape(v["raw_dir"]) + ("" if v["raw_dir_found"] else ' <span class="diff">(not found)</span>'))]
                for d, v in f["datasets"].items()]
        out = _table(["dataset", "rows read", "records (summary)", "records (manifest)", "agree", "filtered", "errors",
                      "notes", "raw folder"], rows)
        out += "<h3>Filtered rows by reason</h3>" + _table(["reason", "rows"], [[k, n] for k, n in f["by_reason"].items()])
        out += "<h3>Folders and datasets not converted</h3>" + (
            _table(["folder", "why"], [[k, v] for k, v in f["not_converted"].items()]) if f["not_converted"]
            else '<p class="muted">None: every dataset was converted.</p>')
    led = f["ledger"]
    out += f"<h3>Ledger</h3><p>{_n(led['entries'])} skipped rows in ledger.jsonl.</p>"
    if led["entries"]:
        out += _table(["reason", "rows"], [[k, n] for k, n in led["by_reason"].items()])
    return out


def _link_rot(r: dict) -> str:
    """Web sets: the URLs img2dataset was given, how many arrived, and why the others did not."""
    rot = r.get("link_rot") or {}
    if not rot:
        return '<p class="muted">No web sets (convert img2dataset) in this manifest.</p>'
    out = _table(["web set", "URLs", "arrived", "unavailable", "share unavailable", "by status"],
                 [[d, v["urls"], v["arrived"], v["unavailable"], f"{v['unavailable_share']:.1%}",
                   ", ".join(f"{s}: {n:,}" for s, n in v["by_status"].items())] for d, v in rot.items()])
    for d, v in rot.items():
        out += f"<h3>{escape(d)}: why URLs did not arrive</h3>" + _table(
            ["status", "reason", "URLs"], [[x["status"], x["reason"], x["urls"]] for x in v["by_reason"]])
    return out


def _shards(r: dict, figs: dict) -> str:
    s = r["shards"]
    if not s:
        return '<p class="muted">No shards given (use --shards).</p>'
    tok = s["tokenizers"]
    vq, tv = tok.get("vqgan") or {}, tok.get("text_vocab") or {}
    out = _table(["", ""], [["format", s["format"]], ["seed", s["seed"]], ["samples per shard", s["samples_per_shard"]],
                            ["VQGAN", f"{vq.get('name')} (config {vq.get('config_sha256')}, checkpoint {vq.get('checkpoint_sha256')})"],
                            ["text vocabulary", f"{tv.get('name')} (sha256 {tv.get('sha256')})"]])
    out += _table(["split / kind", "shards", "samples", "bytes"], [[k, v["shards"], v["samples"], v["bytes"]] for k, v in s["by_split_kind"].items()])
    out += ("<details><summary>every shard</summary>"
            + _table(["path", "split", "kind", "samples", "bytes"], [[x["path"], x["split"], x["kind"], x["count"], x["bytes"]] for x in s["shards"]])
            + "</details>")
    return out + _figure(figs, "shards")


def render(report: dict) -> str:
    figs = plots.all_plots(report)
    sections = [("Records beside Talk2Face Table 1", _overview(report, figs)), ("Splits", _splits(report, figs)),
                ("Comparable labels", _axes(figs)), ("Every attribute", _attributes(report)),
                ("Text lengths", _lengths(report, figs)), ("Filters and ledger", _filters(report)),
                ("Link rot (web sets)", _link_rot(report)),
                ("Shards", _shards(report, figs))]
    body = "".join(f'<h2 id="s{i}">{escape(t)}</h2>{html}' for i, (t, html) in enumerate(sections))
    toc = " · ".join(f'<a href="#s{i}">{escape(t)}</a>' for i, (t, _) in enumerate(sections))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>facecorpus report</title>'
            f'<link rel="icon" href="data:,"><style>{CSS}</style></head><body><h1>facecorpus label statistics</h1>'
            f'<p class="muted">{escape(report["format"])} · manifest {escape(report["manifest"])}'
            f'{" · shards " + escape(report["shards_dir"]) if report["shards_dir"] else ""}</p><nav>{toc}</nav>{body}</body></html>\n')
