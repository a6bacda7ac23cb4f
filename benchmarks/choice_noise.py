"""How well can *any* choice of range rule do on these evaluation images?

Issue 23's choice bar asks `auto` (a rule picked per calibration subset on
held-out calibration images) to come within 0.3 dB of the best fixed rule,
where "best" is read off the very evaluation images it is scored on. On a
softmax head one to four evaluation images hold half of the output error
(benchmarks/results/calibration.md), so both sides of that bar move with a
handful of images. This measures how far that noise alone goes:

For each model and calibration subset (unseen protocol of
benchmarks/calibration.py) every candidate of ranges.CANDIDATES is made
with ranges from all 200 calibration images and run on the evaluation
images, keeping each image's signal and squared error; `auto`'s pick is
replayed from the held-out scores exactly as selection.choose() makes it.
Then the evaluation images are split in two halves at random, many times:

- the bar, taken on the second half: best fixed rule's mean over the
  subsets there, and each route's gap to it;
- an *oracle* chooser: per subset, the candidate that scores best on the
  first half (or on K images of it) of the evaluation images themselves,
  through the final artifacts: a chooser that sees images of the very
  distribution it is judged on, which `auto` never does;
- `auto` and every fixed rule on the second half.

If the oracle misses the bar about as often as `auto`, the bar measures
the evaluation images' noise, not a chooser.

    python benchmarks/choice_noise.py            the eight rows of calibration.py
    python benchmarks/choice_noise.py validation adds the validation and held-back models' rows
    python benchmarks/choice_noise.py fresh      adds rows of three ResNets trained after the layouts
                                                 were first compared (session 22)
    python benchmarks/choice_noise.py extrapolation_check
                                                 adds two softmax heads trained after the TFLite's auto
                                                 stopped trying extrapolated there
    python benchmarks/choice_noise.py layouts [halves|three_fit]
                                                 saves every row's held-out numbers in other fold layouts
    python benchmarks/choice_noise.py mixed      saves the softmax heads' held-out numbers on blends of
                                                 unsure images (unsure_mixes)
    python benchmarks/choice_noise.py mnist      three ResNets trained on another data set (benchmarks/mnist.py)
    python benchmarks/choice_noise.py fashion    two ResNets unsure of many images, 10,000 evaluation images
                                                 (benchmarks/fashion.py)
    python benchmarks/choice_noise.py mixed_mnist [mixed_half]
                                                 the blends' held-out numbers of the MNIST softmax heads
    python benchmarks/choice_noise.py mixed_half the blends at the weight 0.5 alone (one float run per image)
    python benchmarks/choice_noise.py mixed_fold the same, each blend's partner from the image's own fold
    python benchmarks/choice_noise.py choosers   replays the choosers on the per-image numbers the
                                                 commands above saved (outside the repository)
"""

import sys
from pathlib import Path

import numpy as np
from common import machine, use_repo_imports, write_results

HERE = Path(__file__).resolve().parent
SPLITS = 400
ORACLE_IMAGES = (25, 50, None)  # None: the whole first half
BAR_DB = -0.3


def auto_rules():
    import importlib

    return importlib.import_module("auto_rules")


def measure_subset(bench, float_model, calibration, evaluation_images, reference):
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.ranges import CANDIDATES, activation_ranges
    from auto_rules import one_fold_fits as fits  # the layout `auto` shipped when these rows were measured

    from edge_resnet.quantize.selection import calibration_inputs, candidates_for
    from edge_resnet.quantize.statistics import collect_statistics

    rules = auto_rules()
    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    float_outputs = run_tflite_bytes(float_model, inputs, "the float model")
    held_out, evaluation = [], []
    for method in CANDIDATES:
        held_out.append([rules.per_image(float_outputs[list(scored)],
                                         bench.int8_tflite_outputs(float_model, activation_ranges(fitted, method),
                                                                   inputs[list(scored)]))
                         for fitted, scored in fits(statistics)])
        outputs = bench.int8_tflite_outputs(float_model, activation_ranges(statistics, method), evaluation_images)
        evaluation.append(rules.per_image(reference, outputs))
    held_out_signal = np.array([signal for signal, _ in held_out[0]])
    held_out_noise = np.array([[noise for _, noise in fits] for fits in held_out])
    kept = [CANDIDATES.index(method) for method in candidates_for(statistics)]
    return {"rules": [method.describe() for method in CANDIDATES],
            "auto": shipped_pick(held_out_signal, held_out_noise, kept),
            "signal": evaluation[0][0], "noise": np.array([noise for _, noise in evaluation]),
            "held_out_signal": held_out_signal, "held_out_noise": held_out_noise}


def db_on(signal, noise, images):
    total = np.sum(noise[..., images], axis=-1)
    return 10 * np.log10(np.sum(signal[images]) / np.maximum(total, 1e-30))


def replay(subsets, splits=SPLITS, seed=0):
    """Per route, the gaps to the best fixed rule on the scored halves of `splits` random splits."""
    rules = subsets[0]["rules"]
    fixed = [rules.index(rule) for rule in auto_rules().FIXED]
    rng = np.random.default_rng(seed)
    gaps = {"auto": [], **{f"oracle on {k or 'half the'} images": [] for k in ORACLE_IMAGES},
            **{rules[index]: [] for index in fixed}}
    for _ in range(splits):
        per_subset = []
        for subset in subsets:
            order = rng.permutation(len(subset["signal"]))
            choosing, scored = order[: len(order) // 2], order[len(order) // 2:]
            on_scored = db_on(subset["signal"], subset["noise"], scored)
            oracle = {k: int(np.argmax(db_on(subset["signal"], subset["noise"], choosing[:k]))) for k in ORACLE_IMAGES}
            per_subset.append((on_scored, oracle, subset["auto"]))
        mean_fixed = {index: np.mean([on[index] for on, _, _ in per_subset]) for index in fixed}
        best = max(mean_fixed.values())
        gaps["auto"].append(np.mean([on[pick] for on, _, pick in per_subset]) - best)
        for k in ORACLE_IMAGES:
            gaps[f"oracle on {k or 'half the'} images"].append(np.mean([on[oracle[k]] for on, oracle, _ in per_subset])
                                                               - best)
        for index in fixed:
            gaps[rules[index]].append(mean_fixed[index] - best)
    return {route: {"mean_gap_db": float(np.mean(values)), "meets_bar": float(np.mean(np.array(values) >= BAR_DB))}
            for route, values in gaps.items()}


def saved_arrays(model_name):
    """Where a row's per-image numbers are kept (outside the repository) for replaying other choosers."""
    from trained import cache_folder

    folder = cache_folder() / "choice_noise"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / ("".join(c if c.isalnum() else "_" for c in model_name)[:120] + ".npz")


def summarize(model_name, protocol, subsets):
    np.savez_compressed(saved_arrays(model_name), **{f"{key}_{index}": np.asarray(subset[key])
                                                      for index, subset in enumerate(subsets)
                                                      for key in ("signal", "noise", "held_out_signal",
                                                                  "held_out_noise", "auto")})
    rules = subsets[0]["rules"]
    whole = [db_on(subset["signal"], subset["noise"], np.arange(len(subset["signal"]))) for subset in subsets]
    fixed = {rule: float(np.mean([on[rules.index(rule)] for on in whole])) for rule in auto_rules().FIXED}
    best = max(fixed, key=fixed.get)
    auto_db = float(np.mean([on[subset["auto"]] for on, subset in zip(whole, subsets)]))
    return {"model": model_name, "protocol": protocol, "evaluation_images": len(subsets[0]["signal"]),
            "auto_picked": [rules[subset["auto"]] for subset in subsets], "best_fixed": best,
            "best_fixed_db": fixed[best], "auto_db": auto_db, "fixed_db": fixed, "halves": replay(subsets),
            "gap_db": {"auto": auto_db - fixed[best]}}


def markdown(rows, machine_info, choosers=None, mnist_rows=(), fashion_rows=()):
    lines = ["# The choice bar against the evaluation images' own noise", "",
             "Commands: `python benchmarks/choice_noise.py`, then `python benchmarks/choice_noise.py validation`, "
             "`... fresh`, `... extrapolation_check`. The validation rows: models trained after `auto`'s layout (ResNet-18 "
             "seed 11), its rules (ResNet-101 seed 23), its consensus candidate (ResNet-152 seed 29) and the softmax "
             "floor (ResNet-50 seed 41) were fixed; then six rows: three networks trained after other choosers "
             "and fold layouts were first compared on the sixteen before them (session 22); the last two: softmax "
             "heads trained after the TFLite's `auto` stopped trying `extrapolated` there. Every model was trained "
             "again on this machine for this run.", "",
             f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores. Unseen protocol of "
             "benchmarks/calibration.py (4 subsets of 200 calibration images, each evaluated on the other half of "
             f"the held-out digits). The evaluation images are split in random halves {SPLITS} times; on the second "
             "half, each route's mean over the subsets is compared with the best fixed rule's there (the bar: within "
             f"{-BAR_DB} dB). Oracle: per subset, the candidate of `auto` whose final artifact scores best on the "
             "first half's images (or on 25 or 50 of them): it sees images of the distribution it is judged on.", "",
             "Each cell: share of the splits on which the route meets the bar (mean gap dB).", "",
             *noise_tables(rows)]
    if mnist_rows:
        lines += ["", "## Another data set: MNIST", "",
                  "Command: `python benchmarks/choice_noise.py mnist`. Three ResNets trained on 2500 images of the MNIST "
                  "sample of benchmarks/mnist.py (no rule of `auto` was chosen on it); calibration subsets of 200 from "
                  "one half of the other 2500, evaluated on the other half: 1250 evaluation images, so the oracle "
                  "chooses on 625 of them.", "", *noise_tables(mnist_rows)]
    if fashion_rows:
        lines += ["", "## Models unsure of many images: Fashion-MNIST", "",
                  "Command: `apt-get install dataset-fashion-mnist`, then `python benchmarks/choice_noise.py fashion`. "
                  "The two ResNets of benchmarks/trained.py fashion_models (4000 Fashion-MNIST images trained on, "
                  "after every rule of `auto` was fixed; right on 83-86% of the test images); calibration subsets of "
                  "200 drawn from the 4000 training images no model trained on, each evaluated on the 10,000 test "
                  "images, so the oracle chooses on 5000 of them.", "", *noise_tables(fashion_rows)]
    return "\n".join(lines + chooser_lines(choosers)) + "\n"


def noise_tables(rows):
    """Markdown: per row each route's share of splits meeting the bar, and the means per head."""
    routes = list(rows[0]["halves"])
    lines = ["| model | best fixed (all images) | auto - best (all images) | " + " | ".join(routes) + " |",
             "|---|---|---|" + "---|" * len(routes)]
    for row in rows:
        cells = [f"{100 * row['halves'][route]['meets_bar']:.0f}% ({row['halves'][route]['mean_gap_db']:+.2f})"
                 for route in routes]
        lines.append(f"| {row['model']} | {row['best_fixed']} {row['best_fixed_db']:.2f} | "
                     f"{row['gap_db']['auto']:+.2f} | " + " | ".join(cells) + " |")
    for title, chosen in (("logits heads", [row for row in rows if "logits head" in row["model"]]),
                          ("softmax heads", [row for row in rows if "softmax head" in row["model"]]),
                          ("every row", rows)):
        if not chosen:
            continue
        lines += ["", f"Over the {title} ({len(chosen)}): mean share of splits meeting the bar, mean gap dB", "",
                  "| route | meets the bar | mean gap dB |", "|---|---|---|"]
        for route in routes:
            lines.append(f"| {route} | {100 * np.mean([row['halves'][route]['meets_bar'] for row in chosen]):.0f}% | "
                         f"{np.mean([row['halves'][route]['mean_gap_db'] for row in chosen]):+.2f} |")
    lines += ["", "`auto` picked per subset:", ""]
    return lines + [f"- {row['model']}: {', '.join(row['auto_picked'])}" for row in rows]


def chooser_lines(choosers):
    """Markdown: each chooser replayed on the saved held-out numbers (`python benchmarks/choice_noise.py choosers`)."""
    if not choosers:
        return []
    names = list(dict.fromkeys(name for row in choosers for name in row if name != "model"))
    lines = ["", "## Other choosers replayed on the same numbers", "",
             "Command: `python benchmarks/choice_noise.py layouts halves` and `... layouts three_fit` (each row's "
             "held-out numbers in those layouts; `... layouts_mnist halves` for the MNIST rows alone), then `python benchmarks/choice_noise.py choosers` (no model runs: the per-image numbers "
             "saved by the commands above). Every chooser picks among the int8 TFLite's candidates (no extrapolated "
             "on a softmax head). \"Shipped\": `auto` as it was when measured (ranges from one quarter of the "
             "calibration images, scored on the other three, two such fits, the mean of their dB). \"Ranges from "
             "half\": ranges from two quarters (stratified), scored on the other two, then the halves swap, so each "
             "image is scored once by ranges fitted on 100 images (2/3 of the shipped layout's image runs); pooled "
             "over all 200 images, or the mean of the two fits' dB. \"Ranges from three folds\" (where `... layouts "
             "three_fit` saved its numbers): ranges from three quarters, scored on the fourth, every quarter in turn, "
             "pooled. \"Blends\" (softmax heads only, where `... mixed` saved them): the shipped fits scored on one blend "
             "per scored image instead of (or beside) the image itself: the image and one of another predicted class, "
             "mixed at the weight of 0.3-0.7 where the float model's top probability is lowest (images the model is "
             "unsure of, made from the calibration images alone); \"at 0.5\" (`... mixed_half`): every blend "
             "at the weight 0.5, one float run per scored image instead of five; \"own fold\" (`... mixed_fold`): "
             "one blend at 0.5 per calibration image, its partner from the image's own fold, as `auto` could make "
             "them (one float run per calibration image). \"min/max unless a rule's lead "
             "holds\": the shipped fits' numbers, but a rule other than min/max is taken only where its lead over "
             "min/max, at the 16th percentile of 1000 resamples of the held-out images, is above 0 (the highest "
             "such bound wins; added after every row here was measured). The MNIST rows (`... mnist`) are replayed "
             "beside the digits rows. Each cell: gap to the best fixed rule on all evaluation images, dB (share of the random halves meeting the bar; - not measured).", "", "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in choosers:
        lines.append(f"| {row['model']} | " + " | ".join(
            f"{row[name]['gap_db']:+.2f} ({100 * row[name]['meets_bar']:.0f}%)" if name in row else "-"
            for name in names) + " |")
    for title, heads in ((f"{data} {head}s", [row for row in choosers if head in row["model"]
                                              and data_set_of(row["model"]) == data])
                         for data in ("digits", "MNIST", "Fashion-MNIST") for head in ("logits head", "softmax head")):
        if not heads:
            continue
        summaries = []
        for name in names:
            if chosen := [row[name]['gap_db'] for row in heads if name in row]:
                summaries.append(f"{name} {np.mean(chosen):+.2f} dB, {sum(gap < BAR_DB for gap in chosen)} of "
                                 f"{len(chosen)} rows more than {-BAR_DB} dB short")
        lines += ["", f"Over the {title}: " + "; ".join(summaries)]
    return lines


def data_set_of(model_name):
    """Which data set a row's model was trained on, read off its name."""
    return next((name for name in ("Fashion-MNIST", "MNIST") if f"({name}" in model_name), "digits")


def shipped_pick(held_out_signal, held_out_noise, kept=None):
    """selection.choose()'s pick from per-image held-out numbers (signal [fit, image], noise [candidate, fit,
    image]): the best mean over the fits of each fit's pooled SQNR, ties to the earlier candidate, min/max
    where no candidate is told apart; among the candidates `kept` (indices, min/max first) if given."""
    from edge_resnet.quantize.selection import INDISTINGUISHABLE_DB

    kept = list(range(held_out_noise.shape[0])) if kept is None else kept
    scores = np.mean(10 * np.log10(held_out_signal.sum(-1) / held_out_noise[kept].sum(-1)), axis=1)
    return 0 if np.ptp(scores) < INDISTINGUISHABLE_DB else kept[int(np.argmax(scores))]


def pooled_fits_pick(subset, kept):
    """The shipped fits' numbers pooled: one SQNR over every scored image of both fits (an image scored by both
    counts twice), not the mean of the fits' dB; among `kept`, min/max where none is told apart."""
    from edge_resnet.quantize.selection import INDISTINGUISHABLE_DB

    scores = 10 * np.log10(subset["held_out_signal"].sum() / subset["held_out_noise"][kept].sum((1, 2)))
    return 0 if np.ptp(scores) < INDISTINGUISHABLE_DB else kept[int(np.argmax(scores))]


def tflite_candidates(softmax):
    """Indices of the candidates the int8 TFLite's `auto` tries (selection.candidates_for): all but
    extrapolated on a softmax head."""
    from edge_resnet.quantize.ranges import CANDIDATES

    return [index for index, method in enumerate(CANDIDATES) if not (softmax and method.name == "extrapolated")]


def layout_pick(subset, layout, kept, pooled=True):
    """A layout's pick: the best SQNR pooled over every scored image (or the mean of its fits' dB), among
    `kept`; min/max where none is told apart."""
    from edge_resnet.quantize.selection import INDISTINGUISHABLE_DB

    signal, noise, fit_of = subset[f"{layout}_signal"], subset[f"{layout}_noise"][kept], subset[f"{layout}_fold_of"]
    if pooled:
        scores = 10 * np.log10(signal.sum() / noise.sum(-1))
    else:
        scores = np.mean([10 * np.log10(signal[fit_of == fit].sum() / noise[:, fit_of == fit].sum(-1))
                          for fit in np.unique(fit_of)], axis=0)
    return 0 if np.ptp(scores) < INDISTINGUISHABLE_DB else kept[int(np.argmax(scores))]


def lead_bound_pick(subset, kept, quantile=0.16, resamples=1000):
    """min/max unless another rule's lead over it holds on resamples of the held-out images: the rule whose
    lead's `quantile` over the resamples (about the mean lead less one standard error) is highest, if above 0.
    Each resample draws the same image positions for every fit and candidate."""
    signal, noise = subset["held_out_signal"], subset["held_out_noise"][kept]
    draws = np.random.default_rng(0).integers(0, signal.shape[-1], size=(resamples, signal.shape[-1]))
    scores = np.mean(10 * np.log10(signal[:, draws].sum(-1) / noise[:, :, draws].sum(-1)), axis=1)
    bounds = np.quantile(scores - scores[0], quantile, axis=1)
    return kept[int(np.argmax(bounds))] if np.max(bounds) > 0 else 0


CHOOSERS = {  # name: (the layout whose saved numbers it needs, or None; its pick)
    "shipped (mean of the fits' dB)": (None, lambda subset, softmax: shipped_pick(
        subset["held_out_signal"], subset["held_out_noise"], tflite_candidates(softmax))),
    "shipped fits, pooled over both": (None, lambda subset, softmax: pooled_fits_pick(
        subset, tflite_candidates(softmax))),
    "ranges from three folds, each scored on the fourth, pooled": ("three_fit", lambda subset, softmax: layout_pick(
        subset, "three_fit", tflite_candidates(softmax))),
    "ranges from half, scored on the other half, both in turn, pooled": ("halves", lambda subset, softmax: layout_pick(
        subset, "halves", tflite_candidates(softmax))),
    "halves, mean of the two fits' dB": ("halves", lambda subset, softmax: layout_pick(
        subset, "halves", tflite_candidates(softmax), pooled=False)),
    "shipped fits scored on blends of unsure images, pooled": ("mixed", lambda subset, softmax: layout_pick(
        subset, "mixed", tflite_candidates(softmax))),
    "shipped fits scored on the held-out images and their blends, pooled": ("mixed", lambda subset, softmax:
                                                                            held_out_and_mixed_pick(
                                                                                subset, tflite_candidates(softmax))),
    "blends at the weight 0.5 only, pooled": ("mixed_half", lambda subset, softmax: layout_pick(
        subset, "mixed_half", tflite_candidates(softmax))),
    "held-out images and their blends at 0.5, pooled": ("mixed_half", lambda subset, softmax: held_out_and_mixed_pick(
        subset, tflite_candidates(softmax), "mixed_half")),
    "blends at 0.5 with a partner of the image's own fold, pooled": ("mixed_fold", lambda subset, softmax:
                                                                     layout_pick(subset, "mixed_fold",
                                                                                 tflite_candidates(softmax))),
    "min/max unless a rule's lead over it holds on 84% of resamples": (None, lambda subset, softmax: lead_bound_pick(
        subset, tflite_candidates(softmax)))}


def held_out_and_mixed_pick(subset, kept, layout="mixed"):
    """The best SQNR pooled over the shipped fits' held-out images and their blends (of `layout`), among `kept`."""
    from edge_resnet.quantize.selection import INDISTINGUISHABLE_DB

    signal = subset["held_out_signal"].sum() + subset[f"{layout}_signal"].sum()
    noise = subset["held_out_noise"][kept].sum((1, 2)) + subset[f"{layout}_noise"][kept].sum(-1)
    scores = 10 * np.log10(signal / noise)
    return 0 if np.ptp(scores) < INDISTINGUISHABLE_DB else kept[int(np.argmax(scores))]


def replay_choosers(rows):
    """Per row, per chooser: its evaluation gap to the best fixed rule on all images, and the split bar."""
    from edge_resnet.quantize.ranges import CANDIDATES

    out = []
    for row in rows:
        saved = np.load(saved_arrays(row["model"]))
        layouts = {layout: np.load(path) for layout in SAVED_LAYOUTS
                   if (path := saved_arrays(row["model"]).with_suffix(f".{layout}.npz")).is_file()}
        subsets = []
        for index in range(4):
            subsets.append({"rules": [method.describe() for method in CANDIDATES], "signal": saved[f"signal_{index}"],
                            "noise": saved[f"noise_{index}"], "held_out_signal": saved[f"held_out_signal_{index}"],
                            "held_out_noise": saved[f"held_out_noise_{index}"], "auto": int(saved[f"auto_{index}"]),
                            **{f"{layout}_{key}": arrays[f"{key}_{index}"] for layout, arrays in layouts.items()
                               for key in ("signal", "noise", "fold_of")}})
        result = {"model": row["model"]}
        for name, (layout, pick) in CHOOSERS.items():
            if layout and layout not in layouts:  # not measured for this row
                continue
            picked = [pick(subset, "softmax head" in row["model"]) for subset in subsets]
            whole = [db_on(subset["signal"], subset["noise"], np.arange(len(subset["signal"]))) for subset in subsets]
            gap = float(np.mean([on[p] for on, p in zip(whole, picked)])) - row["best_fixed_db"]
            halves = replay([{**subset, "auto": p} for subset, p in zip(subsets, picked)])["auto"]
            result[name] = {"gap_db": gap, "meets_bar": halves["meets_bar"],
                            "picked": [subsets[0]["rules"][p] for p in picked]}
        out.append(result)
    return out


LAYOUTS = {  # name: (folds whose statistics give the ranges, folds scored with them) per fit
    "three_fit": [([other for other in range(4) if other != fold], [fold]) for fold in range(4)],
    "halves": [([0, 1], [2, 3]), ([2, 3], [0, 1])],
}


def measure_layout(layout, bench, float_model, calibration, evaluation_images, reference):
    """The held-out numbers of another fold layout: each fit's ranges from its folds' statistics alone,
    scored on its other folds' images ("three_fit": three folds fit, the fourth scores, every fold in
    turn; "halves": two folds fit, the other two score, both halves in turn: each image scored once)."""
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.ranges import CANDIDATES, activation_ranges
    from edge_resnet.quantize.selection import calibration_inputs
    from edge_resnet.quantize.statistics import collect_statistics

    rules = auto_rules()
    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    float_outputs = run_tflite_bytes(float_model, inputs, "the float model")
    fits = [(rules.part_of(statistics, fitting), sorted(position for fold in scoring
                                                        for position in statistics.folds[fold].positions))
            for fitting, scoring in LAYOUTS[layout]]
    noise = [np.concatenate([rules.per_image(float_outputs[scored], bench.int8_tflite_outputs(
        float_model, activation_ranges(fitted, method), inputs[scored]))[1] for fitted, scored in fits])
             for method in CANDIDATES]
    return {"fold_of": np.concatenate([[fit] * len(scored) for fit, (_, scored) in enumerate(fits)]),
            "signal": np.concatenate([np.sum(float_outputs[scored].reshape(len(scored), -1).astype(np.float64) ** 2, 1)
                                      for _, scored in fits]), "noise": np.array(noise)}


BLEND_WEIGHTS = {  # blend layout: the weights each blend is tried at (one float run per weight and image)
    "mixed": (0.3, 0.4, 0.5, 0.6, 0.7),
    "mixed_half": (0.5,),
}


def unsure_mixes(images, float_outputs, float_model, seed=0, weights=BLEND_WEIGHTS["mixed"]):
    """One blend per scored image: it and a partner the float model puts in another class, mixed at the
    one of `weights` where the float model's top probability is lowest: images the model is unsure of,
    where a softmax head's int8 error sits, made from the calibration images alone."""
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes

    rng = np.random.default_rng(seed)
    classes = np.argmax(float_outputs.reshape(len(images), -1), 1)
    partners = np.array([rng.choice(np.flatnonzero(classes != label) if np.any(classes != label)
                                    else np.arange(len(images))) for label in classes])
    tried = np.stack([weight * images + (1 - weight) * images[partners] for weight in weights])
    outputs = np.stack([run_tflite_bytes(float_model, blend.astype(np.float32), "the float model")
                        for blend in tried])
    top = outputs.reshape(len(weights), len(images), -1).max(-1)
    unsure = np.argmin(top, 0)
    return tried[unsure, np.arange(len(images))].astype(np.float32), outputs[unsure, np.arange(len(images))]


def measure_mixed(bench, float_model, calibration, evaluation_images, reference, weights=BLEND_WEIGHTS["mixed"]):
    """The fits shipped then (auto_rules.one_fold_fits: each fold's ranges alone) scored on blends of their scored
    images (unsure_mixes) instead of the images themselves."""
    from auto_rules import one_fold_fits as fits

    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.selection import calibration_inputs
    from edge_resnet.quantize.statistics import collect_statistics

    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    float_outputs = run_tflite_bytes(float_model, inputs, "the float model")
    blended = [(fitted, *unsure_mixes(inputs[list(scored)], float_outputs[list(scored)], float_model, fit, weights))
               for fit, (fitted, scored) in enumerate(fits(statistics))]
    return blend_numbers(bench, float_model, blended)


def blend_numbers(bench, float_model, blended):
    """The saved numbers of fits scored on blends: `blended` holds (a fit's statistics, its blends, their
    float outputs) per fit."""
    from edge_resnet.quantize.ranges import CANDIDATES, activation_ranges

    rules = auto_rules()
    noise = [np.concatenate([rules.per_image(outputs, bench.int8_tflite_outputs(
        float_model, activation_ranges(fitted, method), images))[1] for fitted, images, outputs in blended])
             for method in CANDIDATES]
    return {"fold_of": np.concatenate([[fit] * len(images) for fit, (_, images, _) in enumerate(blended)]),
            "signal": np.concatenate([rules.per_image(outputs, outputs)[0] for _, _, outputs in blended]),
            "noise": np.array(noise)}


def fold_blends(inputs, float_outputs, float_model, folds, weight=0.5, seed=0):
    """(blends, their float outputs): one per calibration image, half it and half a partner of its own fold
    that the float model puts in another class, so no blend holds an image its fit's ranges came from."""
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes

    rng = np.random.default_rng(seed)
    classes = np.argmax(float_outputs.reshape(len(inputs), -1), 1)
    partners = np.arange(len(inputs))
    for fold in folds:
        positions = np.asarray(fold.positions)
        for position in positions:
            others = positions[classes[positions] != classes[position]]
            partners[position] = rng.choice(others if len(others) else positions)
    blends = (weight * inputs + (1 - weight) * inputs[partners]).astype(np.float32)
    return blends, run_tflite_bytes(float_model, blends, "the float model")


def measure_fold_blends(bench, float_model, calibration, evaluation_images, reference):
    """The shipped fits scored on fold_blends of their scored images: what `auto` would run (one float run
    per calibration image)."""
    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from auto_rules import one_fold_fits as fits

    from edge_resnet.quantize.selection import calibration_inputs
    from edge_resnet.quantize.statistics import collect_statistics

    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    blends, blend_outputs = fold_blends(inputs, run_tflite_bytes(float_model, inputs, "the float model"),
                                        float_model, statistics.folds)
    return blend_numbers(bench, float_model, [(fitted, blends[list(scored)], blend_outputs[list(scored)])
                                              for fitted, scored in fits(statistics)])


SAVED_LAYOUTS = (*LAYOUTS, *BLEND_WEIGHTS, "mixed_fold")  # every layout whose numbers a row may have saved


def layout_saver(layout):
    def save(model_name, protocol, subsets):
        path = saved_arrays(model_name).with_suffix(f".{layout}.npz")
        np.savez_compressed(path, **{f"{key}_{index}": subset[key] for index, subset in enumerate(subsets)
                                     for key in ("fold_of", "signal", "noise")})
        print(model_name, f"{layout} layout saved", flush=True)
        return {"model": model_name, "gap_db": "saved"}

    return save


def measure_layouts(models, layouts=tuple(LAYOUTS), protocol="unseen"):
    models = None if models is None else list(models)
    for layout in layouts:
        auto_rules().measure(models, (protocol,), layout_measure(layout), layout_saver(layout))


def layout_measure(layout):
    """What measures one subset's numbers in `layout` (a fold layout, or blends)."""
    if layout == "mixed_fold":
        return measure_fold_blends
    if layout in BLEND_WEIGHTS:
        return lambda *args: measure_mixed(*args, weights=BLEND_WEIGHTS[layout])
    return lambda *args: measure_layout(layout, *args)


def every_softmax_row():
    """The softmax heads of every row the commands above measure, in their order."""
    rows = [auto_rules().calibration_benchmark().models_to_measure(), extra_models(), fresh_models(),
            extrapolation_check_models()]
    return [row for models in rows for row in models if row[2] == "softmax"]


def fresh_models():
    from trained import layout_check_models, with_softmax

    for name, model, size in layout_check_models():
        for head in ("logits", "softmax"):
            yield f"{name}, {head} head", model if head == "logits" else with_softmax(model), head, size


def extrapolation_check(rows_before):
    """Softmax heads of two ResNets trained after the TFLite's `auto` stopped trying `extrapolated` there:
    their rows, and per row the gap to the best fixed rule with and without that candidate."""
    from edge_resnet.quantize.ranges import CANDIDATES

    rows = auto_rules().measure(list(extrapolation_check_models()), ("unseen",), measure_subset, summarize)
    widening = [method.describe() for method in CANDIDATES].index("extrapolated 0.25")
    checks = []
    for row in rows:
        saved = np.load(saved_arrays(row["model"]))
        gaps = {}
        for label, skip in (("every rule", False), ("without extrapolated (shipped)", True)):
            kept = [index for index in range(len(CANDIDATES)) if not (skip and index == widening)]
            picks = [kept[shipped_pick(saved[f"held_out_signal_{index}"], saved[f"held_out_noise_{index}"][kept])]
                     for index in range(4)]
            whole = [db_on(saved[f"signal_{index}"], saved[f"noise_{index}"], np.arange(len(saved[f"signal_{index}"])))
                     for index in range(4)]
            gaps[label] = float(np.mean([on[pick] for on, pick in zip(whole, picks)])) - row["best_fixed_db"]
        checks.append({"model": row["model"], "gap_db": gaps})
        print(row["model"], gaps, flush=True)
    return rows_before + rows, checks


def extrapolation_check_models():
    import trained

    for name, model, size in trained.extrapolation_check_models():
        yield f"{name}, softmax head", trained.with_softmax(model), "softmax", size


def extrapolation_check_lines(checks):
    if not checks:
        return ""
    lines = ["", "## The TFLite's softmax heads without `extrapolated`, on models trained after that rule", "",
             "Command: `python benchmarks/choice_noise.py extrapolation_check`. `auto`'s pick replayed with and "
             "without the candidate; gap to the best fixed rule on all evaluation images, dB.", "",
             "| model | every rule | without extrapolated (shipped) |", "|---|---|---|"]
    lines += [f"| {check['model']} | {check['gap_db']['every rule']:+.2f} | "
              f"{check['gap_db']['without extrapolated (shipped)']:+.2f} |" for check in checks]
    return "\n".join(lines) + "\n"


def extra_models():
    from trained import softmax_floor_resnet50, temperature_scoring_resnet152, with_softmax

    yield from auto_rules().calibration_benchmark().validation_models()
    for name, make in (("ResNet-152 w0.25 32x32 seed 29 (held back)", temperature_scoring_resnet152),
                       ("ResNet-50 w0.5 32x32 seed 41 (trained after the floor was measured)",
                        softmax_floor_resnet50)):
        model = make()
        for head in ("logits", "softmax"):
            yield f"{name}, {head} head", model if head == "logits" else with_softmax(model), head, 32


if __name__ == "__main__":
    use_repo_imports()
    sys.path.insert(0, str(HERE))
    import json

    from common import RESULTS

    rules = auto_rules()
    saved = json.loads((RESULTS / "choice_noise.json").read_text()) if sys.argv[1:] else {}
    choosers = None
    if sys.argv[1:] == ["validation"]:
        rows = saved["rows"] + rules.measure(extra_models(), ("unseen",), measure_subset, summarize)
    elif sys.argv[1:2] == ["layouts"]:  # saves arrays only (of the layouts named, or all); results files left as they are
        layouts = tuple(sys.argv[2:]) or tuple(LAYOUTS)
        measure_layouts(None, layouts)
        measure_layouts(extra_models(), layouts)
        measure_layouts(fresh_models(), layouts)
        measure_layouts(extrapolation_check_models(), layouts)
        measure_layouts(rules.calibration_benchmark().mnist_models(), layouts, protocol="mnist")
        sys.exit(0)
    elif sys.argv[1:2] == ["layouts_mnist"]:  # the same on the MNIST rows alone
        measure_layouts(rules.calibration_benchmark().mnist_models(), tuple(sys.argv[2:]) or tuple(LAYOUTS),
                        protocol="mnist")
        sys.exit(0)
    elif sys.argv[1:2] in (["mixed"], ["mixed_half"], ["mixed_fold"]):  # saves arrays only, softmax heads only
        measure_layouts(every_softmax_row(), (sys.argv[1],))
        sys.exit(0)
    elif sys.argv[1:2] == ["mixed_mnist"]:  # the same on the MNIST softmax heads, a data set blends were not tried on
        mnist_softmax = [row for row in rules.calibration_benchmark().mnist_models() if row[2] == "softmax"]
        measure_layouts(mnist_softmax, (sys.argv[2] if sys.argv[2:] else "mixed",), protocol="mnist")
        sys.exit(0)
    elif sys.argv[1:] == ["mnist"]:  # three networks trained on another data set
        rows = saved["rows"]
        saved["mnist_rows"] = rules.measure(list(auto_rules().calibration_benchmark().mnist_models()), ("mnist",),
                                            measure_subset, summarize)
    elif sys.argv[1:] == ["fashion"]:  # two networks unsure of many images, judged on 10,000 images
        rows = saved["rows"]
        saved["fashion_rows"] = rules.measure(list(auto_rules().calibration_benchmark().fashion_models()),
                                              ("fashion",), measure_subset, summarize)
    elif sys.argv[1:] == ["fresh"]:  # models trained after the layouts were compared
        rows = saved["rows"] + rules.measure(list(fresh_models()), ("unseen",), measure_subset, summarize)
    elif sys.argv[1:] == ["extrapolation_check"]:
        rows, checks = extrapolation_check(saved["rows"])
        saved["extrapolation_check"] = checks
    elif sys.argv[1:] == ["choosers"]:
        rows = saved["rows"]
        choosers = replay_choosers(rows + saved.get("mnist_rows", []) + saved.get("fashion_rows", []))
    else:
        rows = rules.measure(None, ("unseen",), measure_subset, summarize)
    info = saved.get("machine") or machine()
    choosers = choosers or saved.get("choosers")
    write_results("choice_noise", {"machine": info, "rows": rows, **({"choosers": choosers} if choosers else {}),
                                   **{key: saved[key] for key in ("extrapolation_check", "mnist_rows", "fashion_rows")
                                      if key in saved}},
                  markdown(rows, info, choosers, saved.get("mnist_rows", ()), saved.get("fashion_rows", ()))
                  + extrapolation_check_lines(saved.get("extrapolation_check")))
