"""Scoring a softmax head's candidates on blends of held-out images too.

A softmax head's output error sits in the few images it is unsure of, and
200 calibration images hold two or three (benchmarks/results/choice_noise.md):
`auto`'s choice there follows those few. Blends of two held-out images the
float model assigns to different classes (pixel-wise, weight drawn in
[0.25, 0.75]) put many images between classes, where the probabilities move
with the logits' error. This replays `auto` with its candidates scored on
(a) the held-out images (what ships), (b) the blends alone, (c) both pooled,
each blend scored by the same fold-fitted ranges as the held-out images it
was made of, on the softmax heads of benchmarks/choice_noise.py; the
evaluation images stay real digits.

    python benchmarks/auto_blends.py
"""

import sys
from pathlib import Path

import numpy as np
from common import machine, use_repo_imports, write_results

HERE = Path(__file__).resolve().parent


def blends(images, predicted, rng):
    """One blend per image: with a partner of another predicted class, weight in [0.25, 0.75]."""
    partners = np.array([rng.choice(np.flatnonzero(predicted != label)) if np.any(predicted != label) else index
                         for index, label in enumerate(predicted)])
    weight = rng.uniform(0.25, 0.75, size=(len(images),) + (1,) * (images.ndim - 1)).astype(np.float32)
    return (weight * images + (1 - weight) * images[partners]).astype(np.float32)


def measure_subset(bench, float_model, calibration, evaluation_images, reference):
    from auto_rules import per_image

    from edge_resnet.quantize.int8_tflite import run_tflite_bytes
    from edge_resnet.quantize.ranges import CANDIDATES, activation_ranges
    from auto_rules import one_fold_fits as fits  # the layout `auto` shipped when this was measured

    from edge_resnet.quantize.selection import calibration_inputs
    from edge_resnet.quantize.statistics import collect_statistics

    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    float_outputs = run_tflite_bytes(float_model, inputs, "the float model")
    rng = np.random.default_rng(7)
    layout = list(fits(statistics))
    blended = []
    for _, scored in layout:
        scored = list(scored)
        images = blends(inputs[scored], np.argmax(float_outputs[scored], axis=1), rng)
        blended.append((images, run_tflite_bytes(float_model, images, "the float model")))
    held_out, on_blends, evaluation = [], [], []
    for method in CANDIDATES:
        held_out.append([per_image(float_outputs[list(scored)], bench.int8_tflite_outputs(
            float_model, activation_ranges(fitted, method), inputs[list(scored)])) for fitted, scored in layout])
        on_blends.append([per_image(float_blend, bench.int8_tflite_outputs(
            float_model, activation_ranges(fitted, method), images))
            for (fitted, _), (images, float_blend) in zip(layout, blended)])
        outputs = bench.int8_tflite_outputs(float_model, activation_ranges(statistics, method), evaluation_images)
        evaluation.append(per_image(reference, outputs))
    return {"rules": [method.describe() for method in CANDIDATES], "held_out": held_out, "blends": on_blends,
            "evaluation": evaluation}


def pick(fits_of_candidates):
    """selection.choose()'s pick from [(signal, noise) per fit] per candidate (choice_noise.shipped_pick)."""
    from choice_noise import shipped_pick

    return shipped_pick(np.array([signal for signal, _ in fits_of_candidates[0]]),
                        np.array([[noise for _, noise in fits] for fits in fits_of_candidates]))


def both(subset):
    return [[(np.concatenate([real[0], blend[0]]), np.concatenate([real[1], blend[1]]))
             for real, blend in zip(real_fits, blend_fits)]
            for real_fits, blend_fits in zip(subset["held_out"], subset["blends"])]


SCORINGS = {"held-out images (shipped)": lambda subset: pick(subset["held_out"]),
            "blends alone": lambda subset: pick(subset["blends"]),
            "held-out images and blends": lambda subset: pick(both(subset))}


def summarize(model_name, protocol, subsets):
    from auto_rules import FIXED, db

    rules = subsets[0]["rules"]
    evaluation = np.array([[db(*per_rule) for per_rule in subset["evaluation"]] for subset in subsets])
    fixed = {rule: float(evaluation[:, rules.index(rule)].mean()) for rule in FIXED}
    best = max(fixed, key=fixed.get)
    gaps, picked = {}, {}
    for name, scoring in SCORINGS.items():
        picks = [scoring(subset) for subset in subsets]
        picked[name] = [rules[index] for index in picks]
        gaps[name] = float(np.mean([evaluation[s, index] for s, index in enumerate(picks)])) - fixed[best]
    blend_share = float(np.mean([np.sum(subset["blends"][0][0][1]) / (np.sum(subset["blends"][0][0][1])
                                                                     + np.sum(subset["held_out"][0][0][1]))
                                 for subset in subsets]))
    return {"model": model_name, "protocol": protocol, "best_fixed": best, "best_fixed_db": fixed[best],
            "fixed_db": fixed, "gap_db": gaps, "picked": picked, "blends_share_of_minmax_error": blend_share}


def softmax_models():
    import choice_noise

    bench = choice_noise.auto_rules().calibration_benchmark()
    for rows in (bench.models_to_measure(("softmax",)), choice_noise.extra_models()):
        yield from (row for row in rows if row[2] == "softmax")


def markdown(rows, machine_info):
    from auto_rules import gap_summary, gap_table

    names = list(rows[0]["gap_db"])
    lines = ["# Scoring a softmax head's candidates on blends of held-out images", "",
             "Command: `python benchmarks/auto_blends.py`", "",
             f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores. Each cell: the evaluation SQNR of what "
             "`auto` picked scoring that way (mean over the 4 calibration subsets, unseen protocol) minus the best "
             "fixed rule's mean, dB. Blends: one per held-out image of each fit, with a partner the float model "
             "assigns to another class, weight in [0.25, 0.75].", "", *gap_table(rows, names)]
    lines += gap_summary("the softmax heads", rows, names, "scored on")
    lines += ["", "Share of min/max's held-out squared error (first fit) that lies on the blends: " + ", ".join(
        f"{row['blends_share_of_minmax_error']:.0%}" for row in rows), "", "Picked per subset:", ""]
    lines += [f"- {row['model']}: " + "; ".join(f"{name}: {', '.join(picks)}" for name, picks in row["picked"].items())
              for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    use_repo_imports()
    sys.path.insert(0, str(HERE))
    import auto_rules

    rows = auto_rules.measure(softmax_models(), ("unseen",), measure_subset, summarize)
    info = machine()
    write_results("auto_blends", {"machine": info, "rows": rows}, markdown(rows, info))
