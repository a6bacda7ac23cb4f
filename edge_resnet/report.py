"""Parity reports: JSON for machines, Markdown for a pull request, and a
self-contained HTML page with plots (matplotlib, embedded as PNG)."""

import base64
import html
import io
import json
from pathlib import Path

from .files import atomic_output
from .layer_debug import IDEAL_RMSE_OVER_SCALE


def _percent(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _points(value):
    return "n/a" if value is None else f"{value:+.2f}"


def _decibels(value):
    return "exact" if value is None else f"{value:.1f}"


def markdown_report(report):
    """`report`: a ParityResult.to_dict() with an optional "layers" entry
    ({artifact name: [(layer, metric, value), ...]})."""
    reference, data = report["reference"], report["data"]
    ref = reference["metrics"]
    lines = [
        "# Accuracy parity",
        "",
        f"Reference: `{reference['name']}` (Keras, {reference['backend']} backend on {reference['device']}); "
        f"top-1 {_percent(ref['top1'])}, top-5 {_percent(ref['top5'])}.",
        f"Data: {data['source']}, {data['size']} images"
        + (", labelled" if data["labelled"] else ", unlabelled (agreement metrics only)")
        + f", fingerprint `{data['fingerprint'][:12]}`.",
        "",
        "| artifact | runtime | top-1 | drop (points) | top-5 | top-1 agreement | top-5 overlap | cosine | SQNR (dB) | max abs error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for candidate in report["candidates"]:
        m = candidate["metrics"]
        lines.append(
            f"| {candidate['name']} | {candidate['runtime']} | {_percent(m['top1'])} | "
            f"{_points(candidate['top1_drop_points'])} | {_percent(m['top5'])} | {_percent(m['top1_agreement'])} | "
            f"{_percent(m['top5_overlap'])} | {m['cosine']:.4f} | {_decibels(m['sqnr_db'])} | {m['max_abs_error']:.3g} |"
        )
    for candidate in report["candidates"]:
        if candidate["changed_classes"]:
            changes = ", ".join(
                f"{c['class']} {_percent(c['reference'])} -> {_percent(c['candidate'])}"
                for c in candidate["changed_classes"]
            )
            lines += ["", f"Classes that changed most in {candidate['name']}: {changes}."]
    for name, layers in report.get("layers", {}).items():
        if layers:
            lines += ["", f"Worst layers of {name} ({layers[0]['metric']}):", ""]
            lines += [f"- `{layer['layer']}`: {layer['value']:.4g}" for layer in layers]
    gates = report.get("gates")
    if gates:
        lines += ["", "Gates: " + ("passed" if not gates["failures"] else "FAILED")]
        lines += [f"- {failure}" for failure in gates["failures"]]
    return "\n".join(lines) + "\n"


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
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, fontsize=8, frameon=False)
    axis.set_title("Accuracy and agreement per artifact")
    png = _figure_png(figure)
    pyplot.close(figure)
    return png


def layer_plot(name, layers):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(7, 0.6 + 0.35 * len(layers)))
    axis.barh(range(len(layers)), [layer["value"] for layer in layers])
    axis.set_yticks(range(len(layers)), [layer["layer"] for layer in layers], fontsize=8)
    axis.invert_yaxis()
    if layers[0]["metric"].startswith("RMSE/scale"):
        axis.axvline(IDEAL_RMSE_OVER_SCALE, color="black", linestyle="--", linewidth=1, label="ideal (0.289)")
        axis.legend(fontsize=8)
    axis.set_xlabel(layers[0]["metric"])
    axis.set_title(f"Worst layers: {name}")
    png = _figure_png(figure)
    pyplot.close(figure)
    return png


def html_report(report):
    body = html.escape(markdown_report(report))
    images = [("Accuracy and agreement", accuracy_plot(report))]
    images += [(f"Per-layer error: {name}", layer_plot(name, layers))
               for name, layers in report.get("layers", {}).items() if layers]
    figures = "\n".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{png}">'
        for title, png in images
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>edge-resnet parity report</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{white-space:pre-wrap}</style>"
        f"</head><body><h1>edge-resnet parity report</h1><pre>{body}</pre>{figures}</body></html>\n"
    )


def write_reports(report, folder, stem="parity"):
    """Write STEM.json, STEM.md and STEM.html into `folder`; return their paths."""
    folder = Path(folder)
    contents = {
        f"{stem}.json": json.dumps(report, indent=2, default=float) + "\n",
        f"{stem}.md": markdown_report(report),
        f"{stem}.html": html_report(report),
    }
    paths = []
    for name, text in contents.items():
        with atomic_output(folder / name) as temporary:
            temporary.write_text(text)
        paths.append(folder / name)
    return paths
