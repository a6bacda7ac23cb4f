"""Which held-out statistic foretells a softmax head's gain on other images?

Until session 56 a budget search on a softmax head judged each step by
full int8's output SQNR moved by the step's gain in the mean over images
of each image's logits SQNR (mixed.judged_sqnr then): on the six
softmax-head ResNet-50 searches with a float32 output that gain was 3 dB
on the calibration images and 0.4-4.0 dB on the probabilities of the
evaluation images. This benchmark
asks whether that is noise (the few unsure images that carry a softmax's
error differ between image sets) or a bias (the statistic measures another
thing than the probabilities' error): every step of those saved searches
is made as the artifact is (step_carry.step_artifact) and run on the
calibration images and the evaluation images, and each candidate
statistic's gain over full int8 is set beside the gain that counts, the
probabilities' pooled SQNR on the evaluation images:

- logits, mean per image: the search's statistic until then (the mean of
  each image's logits SQNR in dB; it still ranks a step's candidates);
- the logits' error ratio, weighted by unsureness (mixed.error_ratio_gain_db,
  what judges the level since): each image's logits
  error over full int8's, averaged as ratios (as a pooled SQNR averages
  errors, where a mean of dB would let images that gain much outweigh
  those that gain little), each image weighted by how unsure the float
  model is of it (1 - the sum of its squared probabilities: a softmax
  passes on a logit error in proportion to it), not by how large its error
  is (which leaves the pooled SQNR to the few images it is unsure of);
- the logits' error, pooled weighted by unsureness (session 57): the
  same weights, but a ratio of the weighted sums of the images' errors
  rather than the mean of each image's ratio, where one image whose full
  int8 error is small can weigh without bound. Tried because the int8
  ONNX search of the full-width digits ResNet-50 read its first candidate
  at -2.8 dB by the mean of ratios, +1.7 by the mean of dB and +2.4 on
  the probabilities of the same held-out images (which image did it was
  not looked at);
- the probabilities at temperature 4, pooled (softmax(logits / 4): more
  images unsure, each image's logit differences still what counts);
- the probabilities, pooled: the output SQNR itself.

On the evaluation images themselves each statistic's gain is measured with
little noise, so the gap between a statistic's gain there and the
probabilities' pooled gain there is its bias; on the calibration images
(the same 200 the search scored, here with ranges from all of them, not
cross-fitted) the gap adds the noise of 200 images.

`validation`: the same on networks none of these statistics was looked at
on (the digits ResNet-34 and ResNet-18, the MNIST ResNet-18, softmax
heads), each searched here first with the default search and a float32
output, into softmax_estimates_validation.md.

`validation again`: the same networks searched again once the search
judged a softmax head's level by the logits' error ratios, into
softmax_estimates_validation_again.md.

    python benchmarks/softmax_estimates.py [validation [again]] [report]
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

TEMPERATURE = 4.0
POOLED_LOGITS = "logits' error, pooled weighted by unsureness"
STATISTICS = ("logits, mean per image", "logits' error ratio, weighted by unsureness", POOLED_LOGITS,
              f"probabilities at temperature {TEMPERATURE:g}, pooled", "probabilities, pooled")
TRUTH = "probabilities, pooled"
RELIABLE_EVALUATION_IMAGES = 2300  # MNIST's 2300 and Fashion-MNIST's 10,000 (the digits' 397 move a softmax's SQNR by dB)


def followed_searches():
    """(saved search, data source) of the float32-output softmax-head ResNet-50 searches made with today's search
    on the networks in today's cache: bar_mnist, bar_fashion, the demo's, and the float32-parts ones."""
    import json

    saved = json.loads((RESULTS / "mixed_precision.json").read_text())
    sources = (("bar_mnist_results", "mnist"), ("bar_fashion_results", "fashion"),
               ("corrected_float_output_results", "digits"), ("bar_softmax_float32_results", None))
    for key, source in sources:
        for result in saved[key]:
            if "softmax" not in result["model"] or result["output_type"] != "float32" or len(result["steps"]) < 2:
                continue
            if key == "corrected_float_output_results" and "demo" not in result["model"]:
                continue  # the other digits networks were trained again since these searches
            yield result, source or source_of(result["model"])


def validation_searches():
    """(saved-search-like result, data source, {name: (model, size)}, data) of softmax-head networks none of the
    statistics above was looked at on, each searched here with today's default search (float32 output, `auto`
    precision): the digits ResNet-34 and ResNet-18 of mixed_precision.trained_models, the MNIST ResNet-18."""
    from mixed_precision import digits, measure, mnist_images, trained_models
    from trained import mnist_models, with_softmax

    networks = [(name, model, size, depth, "digits", digits) for name, model, size, depth in trained_models()
                if "softmax" in name and not name.startswith(("demo", "ResNet-50"))]
    networks += [(f"{name}, softmax head", with_softmax(model), size, 18, "mnist", mnist_images)
                 for name, model, size in mnist_models() if name.startswith("ResNet-18")]
    for name, model, size, depth, source, data in networks:
        result = measure(name, model, size, depth, output_type="float32", precision="auto", data=data, timed=False)
        yield result, source, {name: (model, size)}, data


def source_of(model_name):
    return "fashion" if "Fashion-MNIST" in model_name else "mnist" if "MNIST:" in model_name else "digits"


def statistic_gains(reference, outputs, full_int8, logits_low):
    """{statistic: its gain in dB over full int8} of one artifact's (probabilities, logits), full int8's beside,
    against the float model's. As the search reads them (mixed.softmax_relevant), logits under the low of the
    int8 softmax input's range (`logits_low`) count as that low."""
    from edge_resnet.quantize.mixed import error_ratio_gain_db, output_sqnr_db, per_image_mean_db

    float_probabilities = reference[0]
    float_logits, logits, full_logits = (np.maximum(ran[1], logits_low) for ran in (reference, outputs, full_int8))
    tempered = [softmax(values / TEMPERATURE) for values in (float_logits, logits, full_logits)]
    return {"logits, mean per image": per_image_mean_db(float_logits, logits) - per_image_mean_db(float_logits,
                                                                                                   full_logits),
            "logits' error ratio, weighted by unsureness": error_ratio_gain_db(float_probabilities, float_logits,
                                                                               logits, full_logits),
            POOLED_LOGITS: pooled_logits_gain_db(float_probabilities, float_logits, logits, full_logits),
            f"probabilities at temperature {TEMPERATURE:g}, pooled":
                output_sqnr_db(tempered[0], tempered[1]) - output_sqnr_db(tempered[0], tempered[2]),
            "probabilities, pooled": output_sqnr_db(float_probabilities, outputs[0]) - output_sqnr_db(
                float_probabilities, full_int8[0])}


def pooled_logits_gain_db(probabilities, float_logits, logits, full_logits):
    """The gain (dB) in the logits' squared error summed over the images, each image's weighted by how unsure
    the float model is of it (mixed.unsureness): a ratio of sums, where error_ratio_gain_db takes the mean of
    each image's ratio (which an image whose full-int8 error is small by chance can blow up)."""
    from edge_resnet.quantize.mixed import unsureness

    weights = unsureness(probabilities)
    float_logits = np.asarray(float_logits, np.float64)

    def weighted_error(values):
        errors = (float_logits - np.asarray(values, np.float64)).reshape(len(values), -1)
        return float(np.sum(weights * np.sum(errors ** 2, axis=1)))

    full_int8, these = weighted_error(full_logits), weighted_error(logits)
    return float(min(10 * np.log10(max(full_int8, 1e-30) / max(these, full_int8 * 1e-12, 1e-30)), 120.0))


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def run_both(model_bytes, images):
    from edge_resnet.quantize.int8_tflite import tflite_outputs_and_logits

    probabilities, logits = tflite_outputs_and_logits(model_bytes, images)
    return np.asarray(probabilities, np.float64), np.asarray(logits, np.float64)


def follow(result, source, loaded):
    """The statistics of each step of `result` on the calibration and evaluation images (`loaded`: {source:
    (models, data)}, filled here where it lacks `source`)."""
    from head_precision import all_models
    from mixed_precision import chosen_step_index
    from step_carry import rebuilt, step_artifact

    from edge_resnet.quantize.selection import calibration_inputs

    if source not in loaded:
        loaded[source] = all_models(source)
    float_model, calibration, evaluation, statistics, recipe, ranges, route, _ = rebuilt(result, *loaded[source])
    images = {"calibration": calibration_inputs(calibration, statistics), "evaluation": np.asarray(evaluation)}
    reference = {name: run_both(float_model, pixels) for name, pixels in images.items()}
    logits_low = ranges[statistics.softmax_input.tensor][0]
    steps, full_int8 = [], None
    for step in result["steps"]:
        artifact = step_artifact(float_model, recipe, route, ranges, step, calibration, statistics)
        ran = {name: run_both(artifact, pixels) for name, pixels in images.items()}
        full_int8 = full_int8 or ran
        steps.append({name: statistic_gains(reference[name], ran[name], full_int8[name], logits_low)
                      for name in images})
        steps[-1]["float_parts"] = list(step["float_parts"])
        print(result["model"][:40], result["precision"], len(steps) - 1,
              {name: round(values[TRUTH], 2) for name, values in steps[-1].items() if name != "float_parts"},
              flush=True)
    return {"model": result["model"], "precision": result["precision"], "source": source,
            "evaluation_images": len(images["evaluation"]), "chosen_step": chosen_step_index(result), "steps": steps}


def gains(row, images, statistic):
    """Each step's gain over full int8 (step 0) in `statistic` on `images`, from step 1 on."""
    return np.array([step[images][statistic] for step in row["steps"][1:]])


SAVED_SEARCHES = ("Every step of the saved float32-output softmax-head ResNet-50 searches (benchmarks/results/"
                  "mixed_precision.json: bar_mnist, bar_fashion, the demo's, and bar_softmax_float32's float32 parts)")
VALIDATION_SEARCHES = ("Networks none of these statistics was looked at on (softmax heads: the digits ResNet-34 and "
                       "ResNet-18 of mixed_precision.py, the MNIST ResNet-18), each searched here with the default "
                       "search (float32 output, `auto` precision, full int8 + 3 dB on the held-out calibration "
                       "images); every step of those searches")


AGAIN = (" (searched again once a softmax head's level was judged by the logits' error ratios weighted by "
         "unsureness, its candidates still ranked by the mean of the images' logits SQNR)")


def off(row, statistic):
    """The mean over a search's steps of `statistic`'s gain on the calibration images less the probabilities'
    pooled gain on the evaluation images."""
    return float(np.mean(gains(row, "calibration", statistic) - gains(row, "evaluation", TRUTH)))


def lines(rows, described, validation=False, again=False):
    command = "python benchmarks/softmax_estimates.py" + " validation" * validation + " again" * again
    out = ["# Which held-out statistic foretells a softmax head's gain on other images?", "",
           f"Command: `{command}`", "",
           f"Machine: {described['cpu']}. {VALIDATION_SEARCHES if validation else SAVED_SEARCHES}"
           f"{AGAIN if again else ''}, made as the "
           "artifact is (ranges from all calibration images, biases corrected), run on "
           "the 200 calibration images and on the evaluation images. Each statistic's gain over full int8 per step, "
           f"against the gain that counts: the probabilities' pooled SQNR on the evaluation images. Bias: the mean "
           "over steps of the statistic's gain on the evaluation images less the pooled one there (what it measures "
           "apart from noise); error: the same from the calibration images (bias and the noise of 200 images); "
           "mean |error| and the correlation over steps.", ""]
    header = "| search | steps | " + " | ".join(f"{name}: bias / error / mean abs error / correlation"
                                                 for name in STATISTICS) + " |"
    out += [header, "|---|---|" + "---|" * len(STATISTICS)]
    totals = {name: {"bias": [], "error": [], "abs": []} for name in STATISTICS}
    for row in rows:
        truth = gains(row, "evaluation", TRUTH)
        cells = []
        for name in STATISTICS:
            on_evaluation, on_calibration = gains(row, "evaluation", name), gains(row, "calibration", name)
            bias, error = on_evaluation - truth, on_calibration - truth
            totals[name]["bias"] += list(bias)
            totals[name]["error"] += list(error)
            totals[name]["abs"] += list(np.abs(error))
            correlation = np.corrcoef(on_calibration, truth)[0, 1] if len(truth) > 2 else float("nan")
            cells.append(f"{bias.mean():+.2f} / {error.mean():+.2f} / {np.abs(error).mean():.2f} / "
                         f"{correlation:+.2f}")
        out.append(f"| {row['model']}, {row['precision']} parts ({row['evaluation_images']} evaluation images) | "
                   f"{len(truth)} | " + " | ".join(cells) + " |")
    reliable = [row for row in rows if row["evaluation_images"] >= RELIABLE_EVALUATION_IMAGES]
    out += ["", f"Searches judged on {RELIABLE_EVALUATION_IMAGES} evaluation images or more ({len(reliable)}), "
            "where the statistic's gain on the calibration images, averaged over the steps, ran more than 0.5 dB "
            "over / under the probabilities' pooled gain on the evaluation images: " + "; ".join(
                f"{name}: {sum(off(row, name) > 0.5 for row in reliable)} / {sum(off(row, name) < -0.5 for row in reliable)}"
                for name in STATISTICS) + "."]
    out += ["", "Over all steps: " + "; ".join(
        f"{name}: bias {np.mean(totals[name]['bias']):+.2f}, error {np.mean(totals[name]['error']):+.2f}, "
        f"mean |error| {np.mean(totals[name]['abs']):.2f} dB" for name in STATISTICS) + ".", ""]
    out += ["At the chosen step: each statistic's gain on the calibration images, then on the evaluation images "
            "(pooled probabilities last: the gain that counts).", "",
            "| search | " + " | ".join(STATISTICS) + " |", "|---|" + "---|" * len(STATISTICS)]
    for row in rows:
        if row["chosen_step"] is None or row["chosen_step"] == 0:
            continue
        at = row["chosen_step"] - 1
        out.append(f"| {row['model']}, {row['precision']} parts | " + " | ".join(
            f"{gains(row, 'calibration', name)[at]:+.2f} / {gains(row, 'evaluation', name)[at]:+.2f}"
            for name in STATISTICS) + " |")
    if again:
        out += ["", chosen_gains_text(rows)]
    return out + [""]


def chosen_gains_text(rows):
    """The chosen steps' evaluation gain of these searches beside the first validation searches' (the search
    before its level was judged by the error ratios)."""
    import json

    before = {row["model"]: row for row in json.loads(
        (RESULTS / "softmax_estimates_validation.json").read_text())["results"]}

    def chosen_gain(row):
        return gains(row, "evaluation", TRUTH)[row["chosen_step"] - 1] if row["chosen_step"] else 0.0

    pairs = [(row["model"], chosen_gain(before[row["model"]]), chosen_gain(row)) for row in rows
             if row["model"] in before]
    return ("The chosen step's gain in the probabilities' pooled SQNR on the evaluation images, the first validation "
            "search (its level judged by the mean of dB) -> searched again: " + "; ".join(
                f"{model} {first:+.2f} -> {again:+.2f}" for model, first, again in pairs) + ".")


def main(arguments=()):
    import json

    validation = "validation" in arguments
    # `again`: the validation networks searched again once the search judged a softmax head's level by the
    # logits' error ratios (mixed.error_ratio_gain_db), into softmax_estimates_validation_again
    name = "softmax_estimates" + "_validation" * validation + "_again" * ("again" in arguments)
    if "report" in arguments:
        saved = json.loads((RESULTS / f"{name}.json").read_text())
        (RESULTS / f"{name}.md").write_text("\n".join(lines(saved["results"], saved["machine"], validation,
                                                            "again" in arguments)))
        return
    if validation:  # networks no statistic was looked at on, searched here first
        rows = [follow(result, source, {source: (models, data)})
                for result, source, models, data in validation_searches()]
    else:
        loaded, rows = {}, []
        for result, source in followed_searches():
            rows.append(follow(result, source, loaded))
    described = machine()
    write_results(name, {"machine": described, "results": rows},
                  "\n".join(lines(rows, described, validation, "again" in arguments)))


if __name__ == "__main__":
    tempfile.tempdir = tempfile.mkdtemp(prefix="softmax-estimates-")
    main(sys.argv[1:])
