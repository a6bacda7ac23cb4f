"""Parity reports: JSON for machines, Markdown for a pull request, and a
self-contained HTML page with plots (matplotlib, embedded as PNG)."""

import base64
import html
import io
import json
import re
from pathlib import Path

from ..device.agent import describe_device
from ..files import write_together


def _percent(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _decibels(value):
    return "exact" if value is None else f"{value:.1f}"


PARITY_COLUMNS = ("artifact", "runtime", "top-1", "drop (points)", "top-5", "top-1 agreement", "top-5 overlap",
                  "cosine", "SQNR dB (± standard error)", "max abs error")


def parity_cells(candidate):
    m = candidate["metrics"]
    return (candidate["name"], candidate["runtime"], _percent(m["top1"]), _points(candidate["top1_drop_points"]),
            _percent(m["top5"]), _percent(m["top1_agreement"]), _percent(m["top5_overlap"]), f"{m['cosine']:.4f}",
            sqnr_cell(m), "not finite" if m.get("non_finite_images") else f"{m['max_abs_error']:.3g}")


def sqnr_cell(metrics):
    """An SQNR with its standard error; where outputs were NaN or infinite on some images, that instead."""
    if count := metrics.get("non_finite_images"):
        return f"NaN or inf on {count} of {metrics['samples']} images"
    return _decibels_with_error(metrics["sqnr_db"], metrics.get("sqnr_standard_error_db"))


def non_finite_text(candidate):
    """One line on an artifact whose outputs were NaN or infinite on some images, else None."""
    metrics = candidate["metrics"]
    if not metrics.get("non_finite_images"):
        return None
    return (f"{_code(candidate['name'])} gives outputs that are not finite numbers (NaN or infinity) on "
            f"{metrics['non_finite_images']} of {metrics['samples']} images: they count as wrong in every top-1 "
            "and top-5 figure and fail any gate; its cosine is of all images, those counting as 0.")


def _decibels_with_error(value, standard_error):
    """An SQNR and how far it would move on other images like these (absent in older reports)."""
    if value is None or standard_error is None:
        return _decibels(value)
    return f"{value:.1f} ±{standard_error:.1f}"


def markdown_table(columns, rows):
    """Pipe-table lines; a "|" inside a cell (a file name may hold one) is escaped."""
    def line(cells):
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(columns), "|" + "---|" * len(columns)] + [line(row) for row in rows]


def _code(text):
    """`text` as a Markdown code span (a backtick inside would end it early)."""
    return "`" + str(text).replace("`", "'") + "`"


def parity_summary(report):
    """The parity table, as Markdown lines; a "device" column where artifacts ran on boards."""
    candidates = report["candidates"]
    if any(candidate.get("device") for candidate in candidates):
        return markdown_table(("device", *PARITY_COLUMNS),
                              [(candidate.get("device", "here"), *parity_cells(candidate)) for candidate in candidates])
    return markdown_table(PARITY_COLUMNS, [parity_cells(candidate) for candidate in candidates])


def parity_details(report):
    """What the parity table rests on and what it does not show, as
    Markdown lines: the reference, the data, speeds, recipes, the classes
    that moved, the worst layers."""
    reference, data = report["reference"], report["data"]
    ref = reference["metrics"]
    lines = [
        f"Reference: {reference_source(reference)}; top-1 {_percent(ref['top1'])}, top-5 {_percent(ref['top5'])}.",
        "",
        f"Data: {data['source']}, {data['size']} images"
        + (", labelled" if data["labelled"] else ", unlabelled (agreement metrics only)")
        + f", fingerprint {_code(data['fingerprint'][:12])}.",
        *speed_lines(reference, report.get("device"), report.get("devices", ())),
    ]
    made = report.get("quantization", {})
    if made:
        lines += ["", "How each artifact was made (its recipe JSON):", ""]
        lines += [f"- {_code(name)}: {description}" for name, description in made.items()]
    grid_notes = []  # once per artifact: the same on every board
    for candidate in report["candidates"]:
        if candidate.get("note"):
            lines += ["", candidate["note"]]
        if note := non_finite_text(candidate):
            lines += ["", note]
        if (note := output_grid_parity_text(candidate)) and note not in grid_notes:
            grid_notes.append(note)
            lines += ["", note]
        if candidate["changed_classes"]:
            changes = ", ".join(
                f"{c['class']} {_percent(c['reference'])} -> {_percent(c['candidate'])}"
                for c in candidate["changed_classes"]
            )
            lines += ["", f"Classes that changed most in {candidate['name']}: {changes}."]
    for name, layers in report.get("layers", {}).items():
        if layers:
            lines += ["", f"Worst layers of {name} ({layers[0]['metric']}):", ""]
            lines += markdown_table(("layer", layers[0]["metric"]),
                                    [(_code(layer["layer"]), f"{layer['value']:.4g}") for layer in layers])
    return lines


def output_grid_parity_text(candidate):
    """The line on how much of a candidate's top-1 disagreement its output's
    own int8 (or uint8) grid makes on these images, where it makes any (parity's
    output_grid_top1_changes), else None."""
    metrics = candidate["metrics"]
    note = evaluation_grid_text(metrics.get("output_grid_top1_changes"), metrics["samples"], metrics["top1_agreement"],
                                advice=True, grid_type=metrics.get("output_grid_type"))
    return f"{_code(candidate['name'])}: {note}" if note else None


def evaluation_grid_text(share, samples, top1_agreement, advice, grid_type="int8"):
    """What an artifact's output grid (of `grid_type`) alone does to the
    top-1 of the evaluation images (`share` of `samples`), beside its whole
    top-1 disagreement, and with `advice` what to do about it; None where it
    changes none or the output is float."""
    if not share:
        return None
    changed = round(share * samples)
    said = (f"its output's own {grid_type or 'int8'} grid alone changes the top-1 of {_percent(share)} of these "
            f"images ({changed} of {samples}: the reference's outputs rounded onto it, close calls tie or swap), "
            f"beside its top-1 disagreement of {_percent(1 - top1_agreement)}.")
    return said + (" A float head has no such grid: a --min-agreement budget that full int8 misses, with "
                   "--output-type float32 (convert: and --accuracy-control), lets the search keep the head in "
                   "float32." if advice else "")


def verdict(gates):
    """(passed: True, False, or None when no gate was set; Markdown lines)."""
    gates = gates or {}
    failures = gates.get("failures") or []
    if gates.get("max_accuracy_drop") is None and gates.get("min_agreement") is None and not failures:
        return None, ["No gates set: parity is measured, nothing is enforced."]
    asked = []
    if gates.get("max_accuracy_drop") is not None:
        unit = "point" if gates["max_accuracy_drop"] == 1 else "points"
        asked.append(f"top-1 drop at most {gates['max_accuracy_drop']:g} {unit}")
    if gates.get("min_agreement") is not None:
        asked.append(f"top-1 agreement at least {gates['min_agreement']:g}")
    if not failures:
        return True, [f"Gates: passed ({', '.join(asked)})."]
    return False, [f"Gates: FAILED ({', '.join(asked)})", ""] + [f"- {failure}" for failure in failures]


def markdown_report(report):
    """`report`: a ParityResult.to_dict() with optional "layers"
    ({artifact name: [{"layer", "metric", "value"}, ...]}), "quantization"
    ({artifact name: how it was quantized, range method included}),
    "device" (artifact latencies here) and "gates" entries."""
    _, gate_lines = verdict(report.get("gates"))
    return "\n".join(["# Accuracy parity", "", *gate_lines, "", *parity_summary(report), "",
                      *parity_details(report)]) + "\n"


def reference_source(reference):
    where = f"{reference['backend']} backend on {reference['device']}"
    if reference.get("kind") == "golden":
        return f"golden outputs of {_code(reference['name'])} in {_code(reference['golden'])} (made by Keras, {where})"
    return f"{_code(reference['name'])} (Keras, {where})"


def speed_lines(reference, device, boards=()):
    """The float reference's speed on its device beside each artifact's on this one, or on each board."""
    lines = []
    speed = reference.get("speed")
    if speed:
        batch1 = f", {speed['batch1_ms']:.3g} ms at batch 1" if speed.get("batch1_ms") is not None else ""
        lines.append(f"- float on {reference['device']} ({reference['backend']}): {speed['ms_per_image']:.3g} ms/img "
                     f"at batch {speed['batch_size']}{batch1}")
    if device:
        lines += [f"- {name} on this CPU ({device['device']}): {ms:.3g} ms at batch "
                  f"{device.get('batch', {}).get(name, 1)} (median of {device['runs']})"
                  for name, ms in device["p50_ms"].items()]
    for board in boards:
        lines += [f"- {name} on {board['label']}: {ms:.3g} ms at batch 1 (median of {board['runs']})"
                  for name, ms in board["p50_ms"].items()]
    named = ["", "Devices (over SSH):", "", *[f"- {describe_device(board)}" for board in boards]] if boards else []
    return (["", "Speed:", "", *lines] if lines else []) + named


def plots_available():
    """matplotlib draws the plots; a device install may lack it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure_png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def accuracy_plot(report):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = [c["name"] for c in report["candidates"]]
    agreement = [100 * c["metrics"]["top1_agreement"] for c in report["candidates"]]
    figure, axis = pyplot.subplots(figsize=(7, 0.6 + 0.5 * len(names)))
    positions = range(len(names))
    if report["data"]["labelled"]:
        accuracy = [100 * c["metrics"]["top1"] for c in report["candidates"]]
        axis.barh([p + 0.2 for p in positions], accuracy, height=0.4, label="top-1 accuracy")
        axis.axvline(100 * report["reference"]["metrics"]["top1"], color="black", linestyle="--",
                     linewidth=1, label="reference top-1")
    axis.barh([p - 0.2 for p in positions], agreement, height=0.4, label="top-1 agreement with reference")
    axis.set_yticks(list(positions), names)
    low = min(agreement + [100 * c["metrics"]["top1"] for c in report["candidates"] if c["metrics"]["top1"] is not None])
    axis.set_xlim(max(0, low - 5), 100.5)
    axis.set_xlabel("percent")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=3, fontsize=8, frameon=False)
    axis.set_title("Accuracy and agreement per artifact")
    png = _figure_png(figure)
    pyplot.close(figure)
    return png


def layer_plot(name, layers, limit=None):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(7, 0.6 + 0.35 * len(layers)))
    axis.barh(range(len(layers)), [layer["value"] for layer in layers])
    axis.set_yticks(range(len(layers)), [layer["layer"] for layer in layers], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel(layers[0]["metric"])
    if limit is not None:
        axis.set_xlim(*limit)
    axis.set_title(f"Worst layers: {name}")
    png = _figure_png(figure)
    pyplot.close(figure)
    return png


def latency_plot(rows):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    timed = [row for row in rows if row["p50_ms"] is not None]
    figure, axis = pyplot.subplots(figsize=(7, 0.6 + 0.5 * len(timed)))
    axis.barh(range(len(timed)), [row["p50_ms"] for row in timed],
              color=["tab:gray" if row["mode"] == "none" else "tab:blue" for row in timed])
    axis.set_yticks(range(len(timed)), [row["artifact"] for row in timed], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("median latency, batch 1 (ms); grey: float32")
    axis.set_title("Latency per artifact")
    png = _figure_png(figure)
    pyplot.close(figure)
    return png


PAGE_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;max-width:74rem;
margin:1.5rem auto;padding:0 1.2rem}
h1{font-size:1.5rem;margin:.2rem 0 1rem}h2{font-size:1.2rem;margin:1.8rem 0 .6rem;border-bottom:1px solid #d0d7de}
.verdict{padding:.8rem 1rem;border-radius:6px;border:1px solid;margin:1rem 0;font-weight:600}
.verdict ul{font-weight:400;margin:.4rem 0 0}
.passed{background:#dafbe1;border-color:#1a7f37;color:#0b4f20}.failed{background:#ffebe9;border-color:#cf222e;color:#82071e}
.none{background:#f6f8fa;border-color:#d0d7de}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:.5rem 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:right;white-space:nowrap}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f6f8fa;padding:0 .2rem}
figure{margin:1rem 0}img{max-width:100%;height:auto}figcaption{color:#57606a;font-size:.9rem}
@media print{body{max-width:none;margin:0;font-size:11pt}.scroll{overflow:visible}
table,figure,.verdict{break-inside:avoid}th,td{white-space:normal}}
"""


def _inline(text):
    """Escaped text with `code` spans."""
    parts = html.escape(text).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick is a backtick
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    return "".join(f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts))


def _table_html(rows):
    cells = [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row.strip()[1:-1])] for row in rows]
    head = "".join(f"<th>{_inline(cell)}</th>" for cell in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in cells[2:])
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def markdown_html(lines):
    """HTML of the Markdown these reports write: headings, paragraphs,
    bullet lists, pipe tables and `code`."""
    blocks, index = [], 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            blocks.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
            index += 1
        else:
            kind = "|" if line.startswith("|") else "- " if line.startswith("- ") else ""
            end = index + 1
            while end < len(lines) and lines[end].strip() and not lines[end].startswith("#") and (
                    lines[end].startswith(kind) if kind else not lines[end].startswith(("|", "- "))):
                end += 1
            chunk = lines[index:end]
            if kind == "|":
                blocks.append(_table_html(chunk))
            elif kind:
                blocks.append("<ul>" + "".join(f"<li>{_inline(item[2:])}</li>" for item in chunk) + "</ul>")
            else:
                blocks.append(f"<p>{_inline(' '.join(chunk))}</p>")
            index = end
    return "\n".join(blocks)


def html_page(title, gates, summary, images, details):
    """A self-contained page (inline CSS, PNG plots as data URIs): the
    verdict, the summary table, the plots, then the details."""
    passed, gate_lines = verdict(gates)
    state = {True: "passed", False: "failed", None: "none"}[passed]
    figures = "\n".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in images
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<section class="verdict {state}">{markdown_html(gate_lines)}</section>'
        f"<h2>Summary</h2>{markdown_html(summary)}"
        + (f"<h2>Plots</h2>{figures}" if images else "")
        + f"<h2>Details</h2>{markdown_html(details)}</body></html>\n"
    )


def parity_plots(report):
    images = [("Accuracy and agreement", accuracy_plot(report))]
    shown = {name: layers for name, layers in report.get("layers", {}).items() if layers}
    values = [layer["value"] for layers in shown.values() for layer in layers]
    limit = (0, max(values) * 1.05) if values else None  # one axis for every artifact, so bars compare across them
    images += [(f"Per-layer error: {name}", layer_plot(name, layers, limit)) for name, layers in shown.items()]
    return images


def html_report(report):
    return html_page("edge-resnet parity report", report.get("gates"), parity_summary(report),
                     parity_plots(report) if plots_available() else [], parity_details(report))


def _megabytes(size_bytes):
    return f"{size_bytes / 1e6:.2f}"


def _optional(value, template):
    return "n/a" if value is None else template.format(value)


SUMMARY_COLUMNS = ("artifact", "size MB", "top-1", "drop pt", "agreement", "SQNR dB (± s.e.)", "p50 ms", "speed-up")


def summary_cells(row):
    """The summary table's cells for one artifact row of a convert report."""
    return (
        row["artifact"],
        _megabytes(row["size_bytes"]),
        _percent(row["top1"]),
        _points(row["top1_drop_points"]),
        _percent(row["top1_agreement"]),
        sqnr_cell(row),
        _optional(row["p50_ms"], "{:.2f}"),
        _optional(row["speedup_vs_float32"], "{:.2f}x"),
    )


def format_summary_table(report):
    """The terminal's closing table (speed-up: against the float32 artifact
    of the same format)."""
    cells = [SUMMARY_COLUMNS] + [summary_cells(row) for row in report["artifacts"]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(SUMMARY_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    reference = report["parity"]["reference"]["metrics"]
    lines.append(f"reference (Keras float): top-1 {_percent(reference['top1'])} on "
                 f"{report['parity']['data']['size']} held-out images")
    for record in report.get("npu", ()):
        lines.append(f"{record['files']['model']}: {record['npu_operators']}/"
                     f"{record['npu_operators'] + record['cpu_operators']} operators on the NPU; Vela's estimate "
                     f"{record['estimated_inference_ms']:.2f} ms on {record['target']} ({record['vela']['system_config']}"
                     "), an estimate, not measured")
    boards = report.get("on_device", {}).get("devices", ())
    for index, board in enumerate(boards):
        measured = "p50 ms measured on" if index == 0 else "also run on"
        lines.append(f"{measured} {describe_device(board)}; its parity: the report's 'On the device' section")
    failures = report["parity"]["gates"]["failures"]
    gates = report["parity"]["gates"]
    if gates["max_accuracy_drop"] is not None or gates["min_agreement"] is not None:
        lines.append("gates: " + ("passed" if not failures else "FAILED: " + "; ".join(failures)))
    return "\n".join(lines)


NPU_COLUMNS = ("compiled for", "file", "operators on NPU / CPU", "Vela's estimate ms", "CPU p50 ms (measured)",
               "SRAM KiB", "flash/DRAM KiB")


def npu_cells(record):
    cpu = record.get("cpu_p50_ms")
    return (record["target"], record["files"]["model"], f"{record['npu_operators']} / {record['cpu_operators']}",
            f"{record['estimated_inference_ms']:.2f}", "n/a" if cpu is None else f"{cpu:.2f}",
            f"{record['sram_kib']:.0f}", f"{record['off_chip_flash_kib'] or record['dram_kib']:.0f}")


def npu_lines(records):
    """The NPU rows of a convert report: Vela's estimates, never measurements."""
    if not records:
        return []
    left = [f"- {record['target']}: on the CPU: " + ", ".join(
        f"{op['operator']} ({op['reason']})" for op in record["cpu_operator_details"]) for record in records
        if record["cpu_operator_details"]]
    return ["", "Arm Ethos-U (Vela's estimate from its performance model, not a measurement; the CPU p50 is the "
            "int8 TFLite measured here):", "", *markdown_table(NPU_COLUMNS, [npu_cells(r) for r in records]),
            *([""] + left if left else [])]


def convert_summary(report):
    lines = markdown_table(SUMMARY_COLUMNS, [summary_cells(row) for row in report["artifacts"]])
    return lines + ["", "Speed-up is against the float32 artifact of the same format, batch 1, "
                    f"{report['config']['threads']} threads, {report['config']['bench_runs']} timed runs."] + \
        npu_lines(report.get("npu", ()))


def convert_details(report):
    model, data = report["model"], report["data"]
    calibration, evaluation = data["calibration"], data["evaluation"]
    lines = [
        f"- Model: {model['description']}; input {'x'.join(map(str, model['input_shape']))}, "
        f"{model['classes']} classes, {model['parameters']:,} parameters.",
        f"- Weights: {_code(model['weights'])}"
        + (f" (sha256 `{model['weights_sha256'][:16]}`)" if model["weights_sha256"] else "") + ".",
    ]
    if data.get("origin"):
        lines.append(f"- Data: {data['origin']}.")
    if calibration:
        lines.append(f"- Calibration: {calibration['size']} images from {calibration['source']} "
                     f"(seed {calibration['seed']}, fingerprint `{calibration['fingerprint'][:12]}`).")
    lines += [
        f"- Evaluation: {evaluation['size']} images from {evaluation['source']}, {data['evaluation_from']} "
        f"(fingerprint `{evaluation['fingerprint'][:12]}`).",
        f"- BatchNorm: folded {len(report['fold']['folded'])}, "
        f"{depthwise_text(report['fold'].get('as_depthwise', []))}left {len(report['fold']['skipped'])}; "
        f"folded vs original max |diff| {report['fold']['probe_max_abs_diff']:.2g} on real images.",
    ]
    lines += [f"- {_code(row['artifact'])}: {row['quantization']}; {row['runtime'] or 'not timed'}."
              for row in report["artifacts"]]
    lines += output_grid_lines(report["artifacts"])
    lines += range_selection_lines(report["artifacts"])
    stages = ", ".join(f"{stage['stage']} {stage['seconds']:.1f} s" for stage in report["stages"])
    lines += ["", f"Run: {report['total_seconds']:.0f} s, peak memory {report['peak_rss_mb']:.0f} MB. "
              f"Stages: {stages}.", "", "## Accuracy parity", "", *parity_summary(report["parity"]), "",
              *parity_details(report["parity"])]
    if report.get("mixed_precision"):
        lines += ["", "## Higher-precision parts for the accuracy budget"]
        for name, record in report["mixed_precision"].items():
            lines += ["", f"### {_code(name)}", "", *mixed_precision_lines(record),
                      *budget_evaluation_lines(report.get("budgets_on_evaluation", {}).get(name))]
    if report.get("on_device"):
        lines += ["", "## On the device (over SSH)", "", "Every artifact again, run and timed on the board(s) "
                  "against the same golden outputs; the summary's latencies are the first board's.", "",
                  *parity_summary(report["on_device"]), "", *parity_details(report["on_device"])]
    return lines


def depthwise_text(as_depthwise):
    """The report's words on BatchNormalizations made 1x1 depthwise convolutions (none: nothing)."""
    return f"made {len(as_depthwise)} a 1x1 depthwise convolution (nothing to fold into), " if as_depthwise else ""


def output_grid_lines(rows):
    """One line per artifact whose output's int8 (or uint8) grid alone changes some calibration images' top-1."""
    from ..quantize.int8_tflite import output_grid_text

    return [f"- {_code(row['artifact'])}: {note}" for row in rows
            if (note := output_grid_text(row.get("output_grid")))]


def range_selection_lines(rows):
    """The `auto` range method's candidates and their held-out scores, one
    column per int8 artifact (each format chooses on its own runtime)."""
    from ..quantize.selection import per_image_text, room_text, score_key, sureness_text

    chosen = [row for row in rows if row.get("range_selection") and row["range_selection"]["candidates"]]
    if not chosen:
        return []
    by_candidates = sorted(chosen, key=lambda row: -len(row["range_selection"]["candidates"]))  # the fullest first
    rules = list(dict.fromkeys(entry["rule"] for row in by_candidates for entry in row["range_selection"]["candidates"]))
    scores = [{entry["rule"]: entry[score_key(selection)] for entry in selection["candidates"]}
              for selection in (row["range_selection"] for row in chosen)]
    winners = [row["range_selection"]["chosen_rule"] for row in chosen]
    table = [[rule] + [score_cell(score, rule) + (" (chosen)" if rule == winner else "")
                       for score, winner in zip(scores, winners)]
             for rule in rules]
    selection = chosen[0]["range_selection"]
    sureness = [f"- {_code(row['artifact'])}: {row['range_selection']['chosen_rule']}"
                f"{sureness_text(row['range_selection'], 'the held-out images')}{room_text(row['range_selection'])}"
                f"{per_image_text(row['range_selection'])}"
                for row in chosen if NOTED_SELECTION_KEYS & set(row["range_selection"])]
    return ["", "## Activation ranges", "",
            f"`auto` tried each rule on the {selection['held_out_samples']} calibration images in "
            f"{selection.get('folds', 4)} folds: {fit_text(selection)}. The best rule then took its ranges from all "
            "calibration images.", "",
            *markdown_table(["rule"] + [_code(row["artifact"]) for row in chosen], table),
            *(["", "How sure each choice is:", "", *sureness] if sureness else [])]


NOTED_SELECTION_KEYS = {"stays_best_share", "tail_room", "per_image_choice"}  # what a choice's own line says


def score_cell(scores, rule):
    """A rule's held-out SQNR for the table: "exact" where it matched the float model, "not tried" where the
    artifact's `auto` did not try it (the TFLite of a softmax head skips extrapolated)."""
    if rule not in scores:
        return "not tried"
    return "exact" if scores[rule] is None else f"{scores[rule]:.2f}"


def score_words(selection):
    from ..quantize.ranges import DEFAULT_AUTO_SCORE
    from ..quantize.selection import SCORE_WORDS

    return SCORE_WORDS[selection.get("score", DEFAULT_AUTO_SCORE)]


def fit_text(selection):
    """How the selection record's ranges were fitted and scored (records
    with "fits" and no "layout" come from the versions that fitted on one
    fold alone; those with neither, from the first, which fitted on all
    folds but one and averaged the folds' dB)."""
    if "layout" in selection:
        return ("each fold held out in turn: ranges fitted on the other folds, the real artifact quantized with "
                f"them and run on the held-out fold's images, {score_words(selection)}")
    if "fits" not in selection:
        return ("ranges fitted on all folds but one, the real artifact quantized with them and run on that fold's "
                "images, its output SQNR (dB) against the float model averaged over the folds")
    return (f"ranges fitted on one fold alone ({selection['fits']} such fits), the real artifact quantized with them "
            "and run on the other folds' images, its output SQNR (dB) against the float model averaged over the fits")


def mixed_precision_lines(record):
    """The parts search as Markdown: what was kept out of int8 (float32 or dynamic-range int8), and each step's cost."""
    from ..quantize.mixed import describe_record, precision_of, unpinned_level_text

    steps = record["steps"]
    rows = [(step + 1, _step_change(steps[step - 1] if step else None, entry), len(entry["float_parts"]),
             _out_of_int8(entry), _judged_text(entry), _standard_error(entry.get("sqnr_se_db")),
             _fraction(entry.get("agreement")),
             _points(entry.get("accuracy_drop_points")), _count(entry.get("gain_images")),
             f"{entry['p50_ms']:.3g}", {True: "yes", False: "NO", None: "-"}[entry["fully_delegated"]])
            for step, entry in enumerate(steps)]
    judged = f"; SQNR judged by {record['sqnr_judged_by']}" if "logits" in record.get("sqnr_judged_by", "") else ""
    tried = "".join(f" {entry['precision_text']} parts were also searched and did not meet it (best "
                    f"{entry['best_held_out_db']:.2f} dB in {entry['steps']} steps)." for entry in record.get("also_tried", ()))
    cap = steps[0].get("grid_db")
    if cap is not None:
        tried += f" The int8 head's own grids cap the output SQNR at {cap:.2f} dB on these images."
    float_output = record.get("with_float32_output")
    unpinned = unpinned_level_text(record)
    if unpinned:
        tried += f" Note: {unpinned}."
    if float_output:
        from ..quantize.mixed import Budget, float_output_text

        tried += f" {float_output_text(float_output, Budget.of_record(record))}."
    return [describe_record(record) + ".", "", f"Measured on {record['held_out_images']} {record['scored_on']}"
            f"{judged}; latency: batch 1 on this machine.{tried}", "",
            *markdown_table(("step", f"part made {precision_of(record)} (or put back, or demoted)", "parts", "operators out of int8", "held-out SQNR dB",
                             "its standard error dB (measured)",
                             "top-1 agreement", "top-1 drop (points)", "images holding half the gain", "p50 ms",
                             "whole graph on XNNPACK"), rows)]


def budget_evaluation_lines(row):
    """What the budget came to on the evaluation images (convert's budgets_on_evaluation row), if measured."""
    if row is None:
        return []
    from ..quantize.mixed import evaluation_text

    text = evaluation_text(row)
    return ["", f"{text[0].upper()}{text[1:]}."]


def _out_of_int8(step):
    """A step's operators out of int8, and how many of them are weight layers demoted to dynamic-range int8."""
    demoted = len(step.get("dynamic_operators") or ())
    return f"{step['float_operators']}" + (f" ({demoted} dynamic-range)" if demoted else "")


def _step_change(previous, step):
    """What a search step changed: the part it made float32 (or dynamic-range
    int8), the one it put back in int8, or the weight layer it demoted to
    dynamic-range int8."""
    if previous is None:
        return "(full int8)"
    from ..quantize.mixed import operator_label

    dropped = [part for part in previous["float_parts"] if part not in step["float_parts"]]
    back = [operator for operator in step.get("int8_operators") or ()
            if operator not in (previous.get("int8_operators") or ())]
    dropped += [operator_label(back[0])] if back else []
    if dropped:
        return f"{', '.join(dropped)} back to int8"
    demoted = [operator for operator in step.get("dynamic_operators") or ()
               if operator not in (previous.get("dynamic_operators") or ())]
    if demoted:
        return f"{operator_label(demoted[0])} to dynamic-range int8"
    return ", ".join(step["float_parts"][-1:])


def _judged_text(step):
    """A step's held-out SQNR as the budget judged it (a softmax head's: estimated, the measured one beside it)."""
    if step.get("estimated_sqnr_db") is None:
        return f"{step['sqnr_db']:.2f}"
    return f"{step['estimated_sqnr_db']:.2f} estimated ({step['sqnr_db']:.2f} measured)"


def _standard_error(value):
    return "-" if value is None else f"{value:.2f}"


def _fraction(value):
    return "-" if value is None else f"{value:.3f}"


def _count(value):
    return "-" if value is None else str(value)


def _points(value):
    return "-" if value is None else f"{value:.1f}"


def mixed_precision_plot(record):
    """Held-out SQNR and latency against the number of float32 operators,
    step by step; the steps that meet the budget starred."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from ..quantize.mixed import Budget, Step

    steps = record["steps"]
    figure, axis = pyplot.subplots(figsize=(7, 3.6))
    operators = [step["float_operators"] for step in steps]
    judged = [Step.from_dict(step) for step in steps]
    axis.plot(operators, [step.judged_db for step in judged], "o-", color="tab:blue")
    spread = [step.judged_se_db(judged[0]) for step in judged]
    with_spread = any(value is not None for value in spread)
    if with_spread:  # how far each level would move on other images like these (none drawn where unknown)
        axis.errorbar(operators, [step.judged_db for step in judged],
                      yerr=[float("nan") if value is None else value for value in spread],
                      fmt="none", ecolor="tab:blue", alpha=0.4, capsize=3)
    budget = Budget.of_record(record)
    meeting = [step for step in judged if not budget.shortfalls(step, judged[0])]
    axis.plot([step.float_operators for step in meeting], [step.judged_db for step in meeting], "*",
              color="tab:green", markersize=14, label="meets the budget")
    if record["budget_sqnr_db"] is not None:
        axis.axhline(record["budget_sqnr_db"], color="tab:red", linestyle="--", linewidth=1)
    if steps[0].get("grid_db") is not None:
        axis.axhline(steps[0]["grid_db"], color="tab:grey", linestyle=":", linewidth=1,
                     label="the int8 head's own cap")
    if meeting or steps[0].get("grid_db") is not None:
        axis.legend(loc="lower right")
    axis.set_xlabel("operators out of int8")
    estimated = any(step.get("estimated_sqnr_db") is not None for step in steps)
    axis.set_ylabel(f"held-out SQNR (dB){', estimated' * estimated}{', ± standard error' * with_spread}",
                    color="tab:blue")
    latency = axis.twinx()
    latency.plot(operators, [step["p50_ms"] for step in steps], "s:", color="tab:grey")
    latency.set_ylabel("p50 ms, batch 1", color="tab:grey")
    axis.set_title(f"{budget.flags()}: the search, step by step")
    png = _figure_png(figure)
    pyplot.close(figure)
    return png


def convert_markdown(report):
    _, gate_lines = verdict(report["parity"]["gates"])
    return "\n".join([f"# edge-resnet convert: {report['model']['name']}", "", *gate_lines, "",
                      *convert_summary(report), "", *convert_details(report)]) + "\n"


def write_convert_reports(report, folder, stem="report"):
    """STEM.json, STEM.md and STEM.html of a convert run, into `folder`."""
    images = []
    if plots_available():
        images = parity_plots(report["parity"])
        if any(row["p50_ms"] is not None for row in report["artifacts"]):
            images.append(("Latency", latency_plot(report["artifacts"])))
        for name, record in report.get("mixed_precision", {}).items():
            images.append((f"Higher-precision parts for the accuracy budget: {name}", mixed_precision_plot(record)))
    contents = {
        f"{stem}.json": json.dumps(report, indent=2, default=float) + "\n",
        f"{stem}.md": convert_markdown(report),
        f"{stem}.html": html_page(f"edge-resnet convert: {report['model']['name']}", report["parity"]["gates"],
                                  convert_summary(report), images, convert_details(report)),
    }
    return write_together(folder, contents)


REPORT_SUFFIXES = (".json", ".md", ".html")
TOOL = "edge-resnet"


def tool_record():
    from .. import __version__

    return {"name": TOOL, "version": __version__}


def write_reports(report, folder, stem="parity"):
    """Write STEM.json, STEM.md and STEM.html into `folder`; return their paths."""
    contents = {
        f"{stem}.json": json.dumps(report, indent=2, default=float) + "\n",
        f"{stem}.md": markdown_report(report),
        f"{stem}.html": html_report(report),
    }
    return write_together(folder, contents)


def check_report_folder(folder, stem="parity"):
    """Refuse, before any work, a report folder whose STEM.* files the
    report would replace where they are not an earlier edge-resnet report
    (STEM.json written by it: a re-run replaces its own report)."""
    from ..errors import ConfigError

    folder = Path(folder)
    there = [folder / f"{stem}{suffix}" for suffix in REPORT_SUFFIXES
             if (folder / f"{stem}{suffix}").exists() or (folder / f"{stem}{suffix}").is_symlink()]
    if not there:
        return
    blocked = next((path for path in there if path.is_symlink() or not path.is_file()), None)
    if blocked is not None:
        raise ConfigError(f"{blocked} is not a plain file, and the report would replace it; move it away or give "
                          "--report another folder")
    if not is_tool_report(folder / f"{stem}.json"):
        raise ConfigError(f"{there[0]} is not an earlier edge-resnet report, and this one would replace it; move it "
                          "away or give --report another folder")


def is_tool_report(path):
    """Whether `path` is a JSON report edge-resnet wrote (its "tool"; a parity report before it had one: its
    reference, candidates and gates)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    tool = record.get("tool")
    return tool.get("name") == TOOL if isinstance(tool, dict) else {"reference", "candidates", "gates"} <= set(record)
