"""Does the level measured on held-out calibration images predict the
evaluation images' level, and would another fold layout predict it better?

An SQNR budget (`--min-sqnr`) is a level on the calibration images, each
scored by int8 ranges that never saw it. The search scores them three folds
fitting, the fourth scored ("three_fit"); `auto` one fold fitting, the other
three scored ("one_fits", its first two fits); "halves" is two folds
fitting, two scored. For every row of benchmarks/choice_noise.py (trained
ResNets, both heads, four calibration subsets of 200 images each; the
digits and MNIST), the rule `auto` chose for the subset: its held-out level
in each layout against what its ranges from all 200 images score on the
subset's evaluation images (the artifact a user ships). Replayed from the
per-image numbers choice_noise.py saved (`python benchmarks/choice_noise.py
layouts halves`, `... layouts three_fit`, `... layouts_mnist halves`):
nothing is run here.

Beside it, how far the evaluation level itself moves: the same artifact's
SQNR on random halves of the evaluation images against all of them.

And whether the held-out level's own standard error (the search records
it: selection.sqnr_standard_error_of) tells where the level will hold: the
subsets split at mixed.PINNED_LEVEL_SE_DB, half the level bar's 1 dB
slack (set from that bar, not fitted here), with a bootstrap over the
held-out images beside the formula.

Command: python benchmarks/budget_level.py
"""

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from auto_rules import db  # noqa: E402 (pooled output SQNR, as every calibration benchmark scores it)
from common import use_repo_imports  # noqa: E402

use_repo_imports()
from edge_resnet.quantize.selection import sqnr_standard_error_of  # noqa: E402
BELOW_DB = 1.0  # the level bar's slack: evaluation more than this below the held-out level misses it
HALVES = 200  # random halves of the evaluation images per subset
BOOTSTRAP = 400  # resamples of the held-out images per subset, to check the standard error's formula


def saved(path):
    return np.load(path) if path.exists() else None


def held_out_levels(main, layouts, subset, rule):
    """{layout: the rule's held-out SQNR over every image the layout scores (pooled)}."""
    levels = {"one_fits": db(main[f"held_out_signal_{subset}"], main[f"held_out_noise_{subset}"][rule])}
    for name, arrays in layouts.items():
        levels[name] = db(arrays[f"signal_{subset}"], arrays[f"noise_{subset}"][rule])
    return levels


def half_spread(signal, noise, seed):
    """The standard deviation of the SQNR on random halves of the evaluation images, dB."""
    generator = np.random.default_rng(seed)
    count = len(signal)
    values = []
    for _ in range(HALVES):
        half = generator.permutation(count)[:count // 2]
        values.append(db(signal[half], noise[half]))
    return float(np.std(values))


def bootstrap_sd(signal, noise, seed):
    """The standard deviation of the pooled SQNR over resamples (with replacement) of the images, dB."""
    generator = np.random.default_rng(seed)
    draws = [generator.integers(0, len(signal), len(signal)) for _ in range(BOOTSTRAP)]
    return float(np.std([db(signal[draw], noise[draw]) for draw in draws]))


def row_numbers(model_name):
    from choice_noise import saved_arrays

    path = saved_arrays(model_name)
    main = saved(path)
    layouts = {name: saved(path.with_suffix(f".{name}.npz")) for name in ("three_fit", "halves")}
    layouts = {name: arrays for name, arrays in layouts.items() if arrays is not None}
    if main is None or "three_fit" not in layouts:
        return None
    subsets = []
    for subset in range(4):
        rule = int(main[f"auto_{subset}"])
        signal, noise = main[f"signal_{subset}"], main[f"noise_{subset}"][rule]
        if "halves" in layouts:  # both cover every calibration image once: the same float outputs
            assert np.isclose(layouts["halves"][f"signal_{subset}"].sum(), layouts["three_fit"][f"signal_{subset}"].sum())
        held_signal, held_noise = layouts["three_fit"][f"signal_{subset}"], layouts["three_fit"][f"noise_{subset}"][rule]
        subsets.append({"evaluation_db": db(signal, noise), "held_out_db": held_out_levels(main, layouts, subset, rule),
                        "evaluation_half_sd_db": half_spread(signal, noise, subset),
                        "held_out_se_db": sqnr_standard_error_of(held_signal, held_noise),
                        "held_out_bootstrap_sd_db": bootstrap_sd(held_signal, held_noise, subset)})
    return {"model": model_name, "subsets": subsets}


def pinned_summary(rows):
    """The three_fit level's gap to the evaluation images on subsets whose held-out standard error is under
    PINNED_LEVEL_SE_DB ("pinned") and on the others."""
    from edge_resnet.quantize.mixed import PINNED_LEVEL_SE_DB

    split = {"pinned": [], "not pinned": []}
    for row in rows:
        for subset in row["subsets"]:
            gap = subset["held_out_db"]["three_fit"] - subset["evaluation_db"]
            split["pinned" if subset["held_out_se_db"] < PINNED_LEVEL_SE_DB else "not pinned"].append(gap)
    return {name: {"subsets": len(gaps), "evaluation_below_share": float(np.mean(np.array(gaps) > BELOW_DB)),
                   "mean_abs_gap_db": float(np.mean(np.abs(gaps)))} if gaps else None
            for name, gaps in split.items()}


def summary(rows, layout):
    gaps = np.array([subset["held_out_db"][layout] - subset["evaluation_db"] for row in rows
                     for subset in row["subsets"] if layout in subset["held_out_db"]])
    if not len(gaps):
        return None
    return {"subsets": len(gaps), "mean_gap_db": float(gaps.mean()), "mean_abs_gap_db": float(np.abs(gaps).mean()),
            "evaluation_below_share": float(np.mean(gaps > BELOW_DB)),
            "evaluation_above_share": float(np.mean(gaps < -BELOW_DB))}


GROUPS = {"every row": lambda name: True,
          "logits heads": lambda name: "logits head" in name,
          "softmax heads": lambda name: "softmax head" in name,
          "digits rows": lambda name: "MNIST" not in name,
          "MNIST rows": lambda name: "MNIST" in name}
LAYOUT_TEXT = {"three_fit": "three folds fit, one scores (the `--min-sqnr` search)",
               "halves": "two folds fit, two score",
               "one_fits": "one fold fits, three score (`auto`, two fits)"}


def markdown(result):
    lines = ["# The budget's level: held-out calibration images against the evaluation images", "",
             "Command: `python benchmarks/budget_level.py` (replays the per-image numbers saved by "
             "`python benchmarks/choice_noise.py layouts halves`, `... layouts three_fit` and `... layouts_mnist "
             "halves`, on top of the rows of benchmarks/results/choice_noise.md). Per calibration subset, the rule `auto` chose: its "
             "held-out SQNR in each fold layout against what its ranges from all 200 images score on the "
             "subset's evaluation images (298 digits, 1250 MNIST). Gap = held-out - evaluation; "
             f"\"evaluation below\" = the evaluation level more than {BELOW_DB:g} dB under the held-out one "
             "(a level budget met on the calibration images then misses the bar).", "",
             "| rows | layout | subsets | mean gap dB | mean abs gap dB | evaluation below | evaluation above |",
             "|---|---|---|---|---|---|---|"]
    for group, by_layout in result["summary"].items():
        for layout, numbers in by_layout.items():
            if numbers:
                lines.append(f"| {group} | {LAYOUT_TEXT[layout]} | {numbers['subsets']} | "
                             f"{numbers['mean_gap_db']:+.2f} | {numbers['mean_abs_gap_db']:.2f} | "
                             f"{numbers['evaluation_below_share']:.0%} | {numbers['evaluation_above_share']:.0%} |")
    if result["missing"]:
        lines += ["", f"Rows without saved numbers for full int8 or three_fit (left out): {', '.join(result['missing'])}."]
    every = {layout: numbers for layout, numbers in result["summary"]["every row"].items() if numbers}
    closest = min(every, key=lambda layout: every[layout]["mean_abs_gap_db"])
    lines += ["", f"Closest on every row: {LAYOUT_TEXT[closest]} ({every[closest]['mean_abs_gap_db']:.2f} dB off on "
              f"average); the evaluation images still fall more than {BELOW_DB:g} dB under the held-out level on "
              f"{every[closest]['evaluation_below_share']:.0%} of subsets with it."]
    lines += pinned_lines(result)
    spread = result["evaluation_half_sd_db"]
    lines += ["", f"The evaluation level's own noise: on random halves of the evaluation images the same artifact's "
              f"SQNR has a standard deviation of {spread['median']:.2f} dB (median over subsets; "
              f"{spread['p90']:.2f} at the 90th percentile, {spread['max']:.2f} at most).", "",
              "## Per row (gaps per subset, three_fit / halves / one_fits)", "",
              "| model | evaluation dB per subset | three_fit gap | halves gap | one_fits gap |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        def gaps(layout):
            return ", ".join(f"{subset['held_out_db'][layout] - subset['evaluation_db']:+.1f}"
                             if layout in subset["held_out_db"] else "-" for subset in row["subsets"])
        evaluation = ", ".join(f"{subset['evaluation_db']:.1f}" for subset in row["subsets"])
        lines.append(f"| {row['model']} | {evaluation} | {gaps('three_fit')} | {gaps('halves')} | {gaps('one_fits')} |")
    return "\n".join(lines) + "\n"


def pinned_lines(result):
    from edge_resnet.quantize.mixed import PINNED_LEVEL_SE_DB

    check = result["standard_error_check"]
    lines = ["", "## The held-out level's standard error as the warning", "",
             f"Per subset, the standard error of full int8's held-out (three_fit) level over its 200 images, as the "
             f"search records it (selection.sqnr_standard_error_of); \"pinned\": under {PINNED_LEVEL_SE_DB:g} dB, half "
             f"the bar's {BELOW_DB:g} dB slack (`quantize` and `convert` print a note on a met --min-sqnr level that "
             f"is not). The formula against a bootstrap of the same images ({BOOTSTRAP} resamples): median ratio "
             f"{check['median_ratio']:.2f}, correlation {check['correlation']:.2f} over {check['subsets']} subsets.",
             "", "| rows | pinned: subsets | evaluation below | mean abs gap dB | not pinned: subsets | "
             "evaluation below | mean abs gap dB |", "|---|---|---|---|---|---|---|"]
    for group, split in result["pinned"].items():
        cells = []
        for name in ("pinned", "not pinned"):
            numbers = split[name]
            cells += ([str(numbers["subsets"]), f"{numbers['evaluation_below_share']:.0%}",
                       f"{numbers['mean_abs_gap_db']:.2f}"] if numbers else ["0", "-", "-"])
        lines.append(f"| {group} | {' | '.join(cells)} |")
    return lines


def main():
    from common import RESULTS, use_repo_imports, write_results

    use_repo_imports()
    noise = json.loads((RESULTS / "choice_noise.json").read_text())
    names = [row["model"] for row in noise["rows"] + noise.get("mnist_rows", [])]
    rows = [row for row in map(row_numbers, names) if row is not None]
    missing = sorted(set(names) - {row["model"] for row in rows})
    summaries = {group: {layout: summary([row for row in rows if keep(row["model"])], layout)
                         for layout in LAYOUT_TEXT} for group, keep in GROUPS.items()}
    spreads = [subset["evaluation_half_sd_db"] for row in rows for subset in row["subsets"]]
    formula = np.array([subset["held_out_se_db"] for row in rows for subset in row["subsets"]])
    bootstrap = np.array([subset["held_out_bootstrap_sd_db"] for row in rows for subset in row["subsets"]])
    result = {"rows": rows, "missing": missing, "summary": summaries,
              "evaluation_half_sd_db": {"median": float(np.median(spreads)), "p90": float(np.percentile(spreads, 90)),
                                        "max": float(np.max(spreads))},
              "pinned": {group: pinned_summary([row for row in rows if keep(row["model"])])
                         for group, keep in GROUPS.items()},
              "standard_error_check": {"subsets": len(formula), "median_ratio": float(np.median(formula / bootstrap)),
                                       "correlation": float(np.corrcoef(formula, bootstrap)[0, 1])}}
    write_results("budget_level", result, markdown(result))


if __name__ == "__main__":
    main()
