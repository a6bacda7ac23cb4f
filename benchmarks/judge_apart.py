"""Does a budget search carry its gain over to other images better when the
images that choose its parts are not the ones that judge them?

The search (edge_resnet/quantize/mixed.py) scores every calibration image
with a candidate ranged on the other three quarters of them, and both picks
each step's part (the best of a shortlist) and judges the budget on all of
them; benchmarks/step_carry.py measured that the held-out gain then runs
ahead of the evaluation images' along the greedy steps. Here the same
searches run with mixed.CHOOSING_FOLDS = (0, 1): the images of two of the
four folds rank and pick the parts, the other two folds' images judge every
step (full int8's level, the budget, the put-backs), so no greedy pick is
judged on the images it was picked on (the put-back passes still decide on
the images that judge them). Beside each: the default search's saved row
(benchmarks/results/mixed_precision.json, `bar_mnist` and `bar_fashion`:
the same models, images, budget rule and code but for that constant).

Models: the MNIST ResNet-50s and the Fashion-MNIST ResNet-50s of those
parts, both heads, float32 output (the head may go float, and no int8
output grid caps the budget), the default search
(`--fallback-precision auto`), budget full int8 + 3 dB on the held-out
images (here: the judging half), 200 calibration images; evaluation: 2300
MNIST and 10,000 Fashion-MNIST test images. No latency is measured (the
operator counts say the cost).

`margin` runs the same searches with all images choosing and judging, but
mixed.STOP_MARGIN_SE = 1: a step meets the budget only where its held-out
gain less one standard error of that gain (image by image) still does, so
the search does not stop where its noise first runs high
(results/stop_margin.md).

    python benchmarks/judge_apart.py [margin] [report]
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

CHOOSING_FOLDS = (0, 1)
MARGIN_SE = 1.0  # one standard error, fixed before any search ran with it
SOURCES = {"mnist": "bar_mnist_results", "fashion": "bar_fashion_results"}  # data: the default rows' saved key


def default_rows(saved_here=None):
    """{(model, output type): the default search's row} of bar_mnist and bar_fashion: as they were when the
    variant's searches ran (kept in its results, `saved_here`), else as saved now."""
    rows = (saved_here or {}).get("defaults")
    if rows is None:
        saved = json.loads((RESULTS / "mixed_precision.json").read_text())
        rows = [row for key in SOURCES.values() for row in saved.get(key, [])]
    return {(row["model"], row["output_type"]): row for row in rows}


def entries():
    """(source, model entry for mixed_precision.measure, data) of every search to run."""
    from mixed_precision import fashion_images, fashion_resnet50s, mnist_images, mnist_models

    for entry in mnist_models():
        yield "mnist", entry, mnist_images
    for entry in fashion_resnet50s():
        yield "fashion", entry, fashion_images


def gains(row):
    """(held-out gain as judged, evaluation gain) of a saved search row (mixed_precision.measure's)."""
    from mixed_precision import chosen_step_index

    chosen = row["steps"][chosen_step_index(row)] if row["float_parts"] else row["steps"][0]
    judged = chosen.get("estimated_sqnr_db") if chosen.get("estimated_sqnr_db") is not None else chosen["sqnr_db"]
    return judged - row["held_out_db"]["full int8"], row["evaluation_db"]["mixed"] - row["evaluation_db"]["full int8"]


def cell(row):
    from mixed_precision import BUDGET_OVER_FULL_INT8_DB

    if not row["met_on_held_out"]:
        return f"not met ({len(row['float_parts'])} parts)", None
    held, evaluated = gains(row)
    level = row["evaluation_db"]["mixed"] >= row["budget_db"] - 1
    within = evaluated >= BUDGET_OVER_FULL_INT8_DB - 1
    kept = f"{row['precision']}: {len(row['float_parts'])} parts ({row['float_operators']})" if row["float_parts"] \
        else "full int8"
    return (f"{kept}, {held:+.2f}, {evaluated:+.2f} ({'yes' if within else 'NO'}), level "
            f"{'yes' if level else 'NO'}"), evaluated


VARIANTS = {  # argument: (results name, title, what differs from the default, its column)
    "judge_apart": ("judge_apart", "Parts chosen on some images, judged on others",
                    f"Judged apart: mixed.CHOOSING_FOLDS = {CHOOSING_FOLDS} (two folds' 100 of the 200 calibration "
                    "images rank and pick the parts, the other two folds' 100 judge every step, the budget and the "
                    "put-backs)", "judged apart"),
    "margin": ("stop_margin", "A step meets the budget only with a margin of its gain's standard error",
               f"Margin: mixed.STOP_MARGIN_SE = {MARGIN_SE:g} (a step that needs a gain meets the budget only where "
               "its held-out gain less that many standard errors of the gain, image by image, still does)",
               "with the margin")}


def configure(variant):
    """Set the search's constant the variant differs by."""
    from edge_resnet.quantize import mixed

    if variant == "margin":
        mixed.STOP_MARGIN_SE = MARGIN_SE
    else:
        mixed.CHOOSING_FOLDS = CHOOSING_FOLDS


def lines(results, defaults, described, variant="judge_apart"):
    _, title, differs, column = VARIANTS[variant]
    command = "python benchmarks/judge_apart.py" + " margin" * (variant == "margin")
    out = [f"# {title}", "", f"Command: `{command}`", "",
           f"Machine: {described['cpu']}. Float32 output. {differs}; default: all 200 images choose and judge, "
           "no margin (the saved rows of `mixed_precision.py bar_mnist` and `bar_fashion`). Budget: "
           "full int8 + 3 dB on the images that judge. Cells: parts kept (operators out of int8), held-out gain, "
           "evaluation gain over full int8 (within 1 dB of the 3 asked?), evaluation level within 1 dB of the "
           "budget?", "", f"| model | output | default | {column} |", "|---|---|---|---|"]
    paired = []
    for row in results:
        default = defaults.get((row["model"], row["output_type"]))
        default_text, default_gain = cell(default) if default else ("-", None)
        apart_text, apart_gain = cell(row)
        out.append(f"| {row['model']} | {row['output_type']} | {default_text} | {apart_text} |")
        if default_gain is not None and apart_gain is not None:
            paired.append((default_gain, apart_gain))
    if paired:
        default_mean = sum(pair[0] for pair in paired) / len(paired)
        apart_mean = sum(pair[1] for pair in paired) / len(paired)
        out += ["", f"Where both met their budget on their held-out images ({len(paired)} searches): evaluation gain "
                f"{default_mean:+.2f} dB on average by default, {apart_mean:+.2f} {column}; within 1 dB of the "
                f"3 asked on {sum(pair[0] >= 2 for pair in paired)} and {sum(pair[1] >= 2 for pair in paired)}."]
    return out + [""]


def main(arguments=()):
    variant = "margin" if "margin" in arguments else "judge_apart"
    name = VARIANTS[variant][0]
    path = RESULTS / f"{name}.json"
    saved = json.loads(path.read_text()) if path.exists() else {"results": []}
    if "report" not in arguments:
        import mixed_precision

        configure(variant)
        saved["machine"] = machine()
        saved.setdefault("defaults", list(default_rows().values()))  # what this variant is set beside
        done = {row["model"] for row in saved["results"]}
        for source, entry, data in entries():
            if entry[0] in done:
                continue
            row = mixed_precision.measure(*entry, output_type="float32", precision="auto", data=data, timed=False)
            saved["results"].append({**row, "source": source})
            path.write_text(json.dumps(saved, indent=2) + "\n")
    if not saved["results"]:
        return print("no searches saved yet: python benchmarks/judge_apart.py runs them")
    table = lines(saved["results"], default_rows(saved), saved["machine"], variant)
    write_results(name, saved, "\n".join(table) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
