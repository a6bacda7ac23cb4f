"""Where does a budget search's gain go between the held-out images and the
evaluation images?

Every search followed so far (`step_carry.py`) gained less on the evaluation
images than on its held-out calibration images, from its first step on, and
choosing on some images while judging on others (`judge_apart.py`) did not
close the gap. Two readings are left: the pooled output SQNR of 10,000
evaluation images is ruled by a few images with errors far larger than any of
200 calibration images shows (heavy tails: then 200-image samples of the
evaluation images gain what the held-out images did, and the pooled gain
falls as the worst images are counted), or the calibration images sit apart
from the evaluation images (then 200-image samples of the evaluation images
gain as little as all of them). This benchmark makes full int8 and the chosen
step of each saved float32-output search of `mixed_precision.py bar_fashion`
(as `step_carry.py` makes them: ranges from all calibration images, biases
corrected), runs both on the calibration and the evaluation images, and reads
each image's error; `mnist` does so for `bar_mnist`'s searches (2300
evaluation images), into error_tails_mnist.md.

    python benchmarks/error_tails.py [mnist] [report]
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

SAMPLES = 2000  # 200-image samples drawn from the evaluation images
SAMPLE_SIZE = 200
WORST_SHARE = 0.01  # the share of images whose errors are counted as the tail


def pooled_gain_db(full_noise, step_noise):
    """The gain (dB) of the pooled output SQNR over full int8: the ratio of the two total errors."""
    return float(10 * np.log10(np.sum(full_noise) / np.sum(step_noise)))


def sample_gains_db(full_noise, step_noise, samples=SAMPLES, size=SAMPLE_SIZE, seed=0):
    """The pooled gain on `samples` random `size`-image samples (without replacement within a sample)."""
    rng = np.random.default_rng(seed)
    picks = np.stack([rng.choice(len(full_noise), size, replace=False) for _ in range(samples)])
    return 10 * np.log10(full_noise[picks].sum(axis=1) / step_noise[picks].sum(axis=1))


def worst_share(noise, share=WORST_SHARE):
    """The part of the total error carried by the `share` of images with the largest errors."""
    count = max(1, int(round(len(noise) * share)))
    return float(np.sort(noise)[-count:].sum() / noise.sum())


def without_worst_gain_db(full_noise, step_noise, share=WORST_SHARE):
    """The pooled gain with the `share` of images where full int8 errs most left out."""
    count = max(1, int(round(len(full_noise) * share)))
    kept = np.argsort(full_noise)[:-count]
    return pooled_gain_db(full_noise[kept], step_noise[kept])


def image_errors(reference, path, images):
    """(signal, error) power per image of the artifact at `path` against the float TFLite's outputs `reference`."""
    from edge_resnet.device.runtime import TfliteRunner
    from edge_resnet.quantize.selection import per_image_errors

    return per_image_errors(reference, TfliteRunner(path).predict(images))


def read_tails(full, chosen):
    """The numbers of one image set: {(signal, error) of full int8, of the chosen step} -> a row's cells."""
    (signal, full_noise), (_, step_noise) = full, chosen
    gains = sample_gains_db(full_noise, step_noise) if len(full_noise) > SAMPLE_SIZE else None
    return {"images": len(full_noise),
            "full_int8_db": float(10 * np.log10(signal.sum() / full_noise.sum())),
            "gain_db": pooled_gain_db(full_noise, step_noise),
            "median_image_gain_db": float(np.median(10 * np.log10(full_noise / step_noise))),
            "full_int8_worst_share": worst_share(full_noise),
            "chosen_worst_share": worst_share(step_noise),
            "gain_without_worst_db": without_worst_gain_db(full_noise, step_noise),
            "sample_gain_db": None if gains is None else {
                "median": float(np.median(gains)), "p10": float(np.percentile(gains, 10)),
                "p90": float(np.percentile(gains, 90))}}


def held_out_gains(result):
    """{held-out gain as the search judged it (a softmax head's estimate from its logits), as measured} of the
    chosen step of a saved search."""
    from mixed_precision import chosen_step_index

    measured = result["held_out_db"]
    chosen = result["steps"][chosen_step_index(result)]
    judged = chosen["estimated_sqnr_db"] if chosen.get("estimated_sqnr_db") is not None else chosen["sqnr_db"]
    return {"judged_gain_db": judged - measured["full int8"],
            "held_out_gain_db": measured["mixed"] - measured["full int8"]}


def tails(result, models, data):
    from mixed_precision import chosen_step_index
    from step_carry import rebuilt, step_artifact

    from edge_resnet.quantize.int8_tflite import run_tflite_bytes

    float_model, calibration, evaluation, statistics, recipe, ranges, route, _ = rebuilt(result, models, data)
    images = {"calibration": np.stack(list(calibration.samples())), "evaluation": evaluation}
    references = {where: run_tflite_bytes(float_model, pixels, "float") for where, pixels in images.items()}
    folder = Path(tempfile.mkdtemp(prefix="error-tails-"))
    errors = {}
    for name, step in (("full", result["steps"][0]), ("chosen", result["steps"][chosen_step_index(result)])):
        path = folder / f"{name}.tflite"
        path.write_bytes(step_artifact(float_model, recipe, route, ranges, step, calibration, statistics))
        errors[name] = {where: image_errors(references[where], path, pixels) for where, pixels in images.items()}
    row = {"model": result["model"], "output_type": result["output_type"], **held_out_gains(result),
           "saved_evaluation_gain_db": result["evaluation_db"]["mixed"] - result["evaluation_db"]["full int8"],
           **{where: read_tails(errors["full"][where], errors["chosen"][where])
              for where in ("calibration", "evaluation")}}
    print(row, flush=True)
    return row


SOURCES = {"fashion": ("bar_fashion", "Fashion-MNIST ResNet-50s: 200 calibration images, 10,000 test images"),
           "mnist": ("bar_mnist", "MNIST ResNet-50s: 200 calibration images, 2300 evaluation images")}


def lines(rows, described, source="fashion"):
    part, what = SOURCES[source]
    out = ["# Where does the gain go between the held-out and the evaluation images?", "",
           f"Command: `python benchmarks/error_tails.py{' mnist' * (source == 'mnist')}`", "",
           f"Machine: {described['cpu']}. The float32-output searches of `mixed_precision.py {part}` "
           f"({what}). Full int8 and the chosen step "
           "made as `step_carry.py` makes them (ranges from all calibration images, biases corrected), each run on "
           "the calibration images (in-sample: the ranges were fitted on them) and on the evaluation images. "
           "Gain: of the pooled output SQNR over full int8. Held-out: each image scored by ranges from the other "
           "three quarters (cross-fitted), as the search judged it (a softmax head's estimate from its logits) and "
           "as measured. "
           f"Samples: {SAMPLES} random {SAMPLE_SIZE}-image samples of the evaluation images, their pooled gain's "
           f"median (10th..90th percentile). Worst {WORST_SHARE:.0%}: the share of the total error the images with "
           "the largest errors carry (full int8 / chosen step), and the gain with the images where full int8 errs "
           "most left out.", "",
           "| model | held-out gain, judged / measured | in-sample gain (calibration) | evaluation gain | "
           "evaluation samples' gain | "
           "evaluation median image gain | calibration median image gain | worst 1% share, evaluation | "
           "evaluation gain without the worst 1% | full int8 dB, calibration / evaluation |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        calibration, evaluation = row["calibration"], row["evaluation"]
        samples = evaluation["sample_gain_db"]
        out.append(
            f"| {row['model']} | {row['judged_gain_db']:+.2f} / {row['held_out_gain_db']:+.2f} | "
            f"{calibration['gain_db']:+.2f} | "
            f"{evaluation['gain_db']:+.2f} | {samples['median']:+.2f} ({samples['p10']:+.2f}..{samples['p90']:+.2f}) | "
            f"{evaluation['median_image_gain_db']:+.2f} | {calibration['median_image_gain_db']:+.2f} | "
            f"{evaluation['full_int8_worst_share']:.0%} / {evaluation['chosen_worst_share']:.0%} | "
            f"{evaluation['gain_without_worst_db']:+.2f} | "
            f"{calibration['full_int8_db']:.2f} / {evaluation['full_int8_db']:.2f} |")
    return out


def run_or_report(name, row_of, lines_of, arguments):
    """The main of a benchmark that makes a row (`row_of(result, models, data)`) per saved float32-output search of
    `bar_fashion` (or, with `mnist` in `arguments`, `bar_mnist`) into results/NAME[_mnist].json and .md, or with
    `report` writes the .md again from the saved rows (`lines_of(rows, machine, source)`)."""
    import json

    from step_carry import models_and_data, saved_searches

    source = "mnist" if "mnist" in arguments else "fashion"
    name = name + "_mnist" * (source == "mnist")
    if "report" not in arguments:
        models, data = models_and_data(source)
        rows = [row_of(result, models, data) for result, searched_on in saved_searches(fashion=source == "fashion")
                if result["output_type"] == "float32" and searched_on == source]
        described = machine()
        write_results(name, {"machine": described, "source": source, "rows": rows},
                      "\n".join(lines_of(rows, described, source)) + "\n")
        return
    saved = json.loads((RESULTS / f"{name}.json").read_text())
    (RESULTS / f"{name}.md").write_text("\n".join(lines_of(saved["rows"], saved["machine"], source)) + "\n")


def main(arguments=()):
    run_or_report("error_tails", tails, lines, arguments)


if __name__ == "__main__":
    main(sys.argv[1:])
