"""Whether `auto` could race its candidates: drop the worse rules after a
heat so fewer of them run the rest. Three race schedules against what
`auto` runs (selection.heats: every rule on both fits), each judged by what
its choice then scores on evaluation images, and by how many image runs it
took. None was shipped: on images the models never trained on, each came
further from the best fixed rule than running every rule on both fits.

Every candidate's int8 TFLite runs once per fit on all that fit's scored
images; each schedule then replays selection.choose on those outputs, so
the choice is what `auto` would make under that schedule (scored against
the float model's outputs from the statistics pass, as `auto` does). Models,
protocols and subsets as in benchmarks/calibration.py, plus its validation
ResNet-18.

Measured while `auto` fitted on one fold (until session 42): the library
no longer has that layout, so this no longer runs (its results stand).

Three four-fit layouts (every fold's ranges fitting in turn) were added
after the race schedules; the ResNet-152 of benchmarks/auto_logits.py was
measured only after they were defined.

    python benchmarks/auto_race.py [PROTOCOL...]             writes benchmarks/results/auto_race.{json,md}
                                                             (protocols: unseen, training; both unless named)
    python benchmarks/auto_race.py held_back [PROTOCOL...]   adds the ResNet-152's rows
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
from auto_rules import calibration_benchmark, db, gap_summary, gap_table, measure, one_fold_fits, per_image
from common import machine, use_repo_imports, write_results

HERE = Path(__file__).resolve().parent
HELD_BACK = "ResNet-152 w0.25 32x32 seed 29"


def best_quarter_on_the_second_fit(every_rule):
    """`every_rule` (selection.heats' schedule) with only the best quarter of
    the rules (two of the eight) and minmax going on to the second fit
    (benchmarks/calibration.py cost times it too)."""
    first, *rest = every_rule
    return (dataclasses.replace(first, keep=0.25), *rest)


def schedules(statistics):
    from edge_resnet.quantize.selection import Heat, heats

    return {"every rule on both fits (shipped)": heats(statistics),
            "halve after one fold, then after the first fit": (Heat(0, (1,), 0.5), Heat(0, (2, 3), 0.5),
                                                              Heat(1, (0, 2, 3))),
            "first fit, then the best two and minmax on the second": best_quarter_on_the_second_fit(heats(statistics)),
            "first fit only": (Heat(0, (1, 2, 3)),),
            "every rule on all four fits": tuple(Heat(fit, tuple(fold for fold in range(4) if fold != fit))
                                                 for fit in range(4)),
            "every rule on all four fits, each scored on the next fold": tuple(Heat(fit, ((fit + 1) % 4,))
                                                                               for fit in range(4)),
            "every rule on all four fits, each scored on the next two folds": tuple(
                Heat(fit, ((fit + 1) % 4, (fit + 2) % 4)) for fit in range(4))}


def measure_subset(bench, float_model, calibration, evaluation_images, reference):
    from edge_resnet.quantize.ranges import CANDIDATES, activation_ranges, ranges_fingerprint
    from edge_resnet.quantize.selection import calibration_inputs, choose, float_reference, one_at_a_time
    from edge_resnet.quantize.statistics import collect_statistics

    statistics = collect_statistics(float_model, calibration)
    inputs = calibration_inputs(calibration, statistics)
    float_outputs = float_reference(float_model, statistics, inputs)
    outputs_of = {}
    for fitted, scored in one_fold_fits(statistics, len(statistics.folds)):  # every fit a schedule may run
        for method in CANDIDATES:
            ranges = activation_ranges(fitted, method)
            key = ranges_fingerprint(ranges)
            if key not in outputs_of:
                outputs = np.full(float_outputs.shape, np.nan, np.float32)
                outputs[list(scored)] = bench.int8_tflite_outputs(float_model, ranges, inputs[list(scored)])
                outputs_of[key] = outputs
    evaluation = [db(*per_image(reference, bench.int8_tflite_outputs(float_model, activation_ranges(statistics, m),
                                                                     evaluation_images))) for m in CANDIDATES]
    picked, images_run = {}, {}
    for name, race_heats in schedules(statistics).items():
        runs = []

        def replay(ranges, positions):
            runs.append(len(positions))
            replayed = outputs_of[ranges_fingerprint(ranges)][positions]
            assert not np.isnan(replayed).any()
            return replayed

        choice = choose(statistics, np.arange(len(inputs)), one_at_a_time(replay), float_outputs, "replay",
                        candidates=CANDIDATES, race_heats=race_heats)
        picked[name], images_run[name] = CANDIDATES.index(choice.method), sum(runs)
    return {"rules": [m.describe() for m in CANDIDATES], "evaluation": evaluation, "picked": picked,
            "images_run": images_run}


def summarize(model_name, protocol, subsets):
    rules = subsets[0]["rules"]
    evaluation = np.array([subset["evaluation"] for subset in subsets])
    best = int(np.argmax(evaluation.mean(0)))
    names = list(subsets[0]["picked"])
    return {"model": model_name, "protocol": protocol, "best_fixed": rules[best],
            "best_fixed_db": float(evaluation[:, best].mean()),
            "gap_db": {name: float(np.mean([evaluation[s, subset["picked"][name]] for s, subset in enumerate(subsets)])
                                   - evaluation[:, best].mean()) for name in names},
            "picked": {name: [rules[subset["picked"][name]] for subset in subsets] for name in names},
            "images_run": {name: float(np.mean([subset["images_run"][name] for subset in subsets])) for name in names}}


def markdown(rows, machine_info):
    names = list(rows[0]["gap_db"])
    lines = ["# Racing `auto`'s candidates: choice quality against image runs", "",
             f"Command: `python benchmarks/auto_race.py {' '.join(sorted({row['protocol'] for row in rows}))}`"
             + (", then `python benchmarks/auto_race.py held_back unseen` (the ResNet-152's rows)"
                if any(HELD_BACK in row["model"] for row in rows) else ""), "",
             f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores. Each cell: the evaluation SQNR of what "
             "the schedule picked (mean over the 4 calibration subsets) minus the best candidate's mean as a fixed "
             "rule, dB. Protocols as in benchmarks/calibration.py.", "",
             *gap_table(rows, names)]
    for title, chosen in (("images the models never trained on (unseen: what users calibrate on)",
                           [r for r in rows if r["protocol"] == "unseen"]),
                          ("the models' training images", [r for r in rows if r["protocol"] == "training"]),
                          ("the validation models only", [r for r in rows if "validation" in r["model"]]),
                          ("the ResNet-152 held back", [r for r in rows if HELD_BACK in r["model"]]),
                          ("every row", rows)):
        lines += gap_summary(title, chosen, names, "schedule", runs_against=names[0])
    return "\n".join(lines) + "\n"


def held_back_models():
    """The ResNet-152 of benchmarks/auto_logits.py, which no schedule here was looked at on."""
    from trained import temperature_scoring_resnet152, with_softmax

    model = temperature_scoring_resnet152()
    for head in ("logits", "softmax"):
        yield (f"{HELD_BACK} (held back: measured after the four-fit layouts were defined), {head} head",
               model if head == "logits" else with_softmax(model), head, 32)


if __name__ == "__main__":
    print("auto_race.py replays selection.choose in the layout `auto` had until session 42 (ranges from one fold "
          "alone, two fits, the mean of their dB), which the library no longer has: its results stand as "
          "recorded in benchmarks/results/auto_race.md", file=sys.stderr)
    sys.exit(2)
    use_repo_imports()
    sys.path.insert(0, str(HERE))
    import json

    from common import RESULTS

    arguments = sys.argv[1:]
    protocols = [argument for argument in arguments if argument != "held_back"] or ("unseen", "training")
    if "held_back" in arguments:
        saved = json.loads((RESULTS / "auto_race.json").read_text())["rows"]
        rows = [row for row in saved if HELD_BACK not in row["model"]] + measure(held_back_models(), protocols,
                                                                                 measure_subset, summarize)
    else:
        bench = calibration_benchmark()
        rows = measure(list(bench.models_to_measure()) + list(bench.validation_models()), protocols,
                       measure_subset, summarize)
    info = machine()
    write_results("auto_race", {"machine": info, "rows": rows}, markdown(rows, info))
