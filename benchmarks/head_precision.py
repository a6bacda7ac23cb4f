"""What a head out of int8 gains under `--output-type float32`: the
classifier in dynamic-range int8 (the first tier `--fallback-precision
auto` searches) against float32, and the dynamic-range head as it was
written before session 55, when litert-quantizer's QUANTIZE behind the
classifier stayed and the float32 output read back its int8 grid.

Every trained model the budget benchmarks search (benchmarks/
mixed_precision.py: the digits models, the MNIST and the Fashion-MNIST
ResNet-50s), both heads, its ranges by `auto` on the 200 calibration images
as `quantize` takes them, biases corrected as the artifact's are; scored on
the evaluation images against the float model. The head as it was written
before: the same artifact with an int8 output, dequantized (the very values
the QUANTIZE and DEQUANTIZE pair gave).

    python benchmarks/head_precision.py [report]
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, write_results  # noqa: E402

SOURCES = ("digits", "mnist", "fashion")  # step_carry.models_and_data's
ROUTES = {  # column: (the head's precision, the artifact's output type)
    "full int8": (None, "float32"),
    "dynamic head, as written before": ("dynamic", "int8"),
    "dynamic head": ("dynamic", "float32"),
    "float32 head": ("float32", "float32"),
}


def all_models(source):
    """(models, data) of `source`, every trained model of mixed_precision.py there (the digits: all four, not
    only the demo's, whose models step_carry follows)."""
    from mixed_precision import trained_models
    from step_carry import models_and_data

    models, data = models_and_data(source)
    if source == "digits":
        models = {name: (model, size) for name, model, size, _ in trained_models()}
    return models, data


def row(name, models, data):
    """Evaluation SQNR of each route (ROUTES) for one model."""
    from mixed_precision import output_sqnr
    from step_carry import rebuilt, step_artifact

    from edge_resnet.quantize.mixed import tflite_route
    from edge_resnet.quantize.recipe import QuantizationRecipe

    searched = {"model": name, "output_type": "float32", "precision": "float32"}  # rebuilt's Route: not used
    float_model, calibration, evaluation, statistics, _, ranges, _, rule = rebuilt(searched, models, data)
    scores = {}
    with tempfile.TemporaryDirectory(prefix="head-precision-") as folder:
        for column, (precision, output_type) in ROUTES.items():
            typed = QuantizationRecipe(output_type=output_type)
            route = tflite_route(float_model, typed, precision or "float32")
            path = Path(folder) / f"{len(scores)}.tflite"
            path.write_bytes(step_artifact(float_model, typed, route, ranges,
                                           {"float_parts": ["head"] if precision else []}, calibration, statistics))
            scores[column] = output_sqnr(float_model, path, evaluation)
    result = {"model": name, "rule": rule.describe(), "evaluation_images": len(evaluation), "evaluation_db": scores}
    print(result, flush=True)
    return result


def lines(rows, described):
    from mixed_precision import machine_text

    gains = {column: [r["evaluation_db"][column] - r["evaluation_db"]["full int8"] for r in rows
                      if "logits" in r["model"]] for column in ROUTES}
    out = ["# The head out of int8 under `--output-type float32`", "",
           "Command: `python benchmarks/head_precision.py`", "",
           f"Machine: {machine_text(described)}. Each trained model of benchmarks/mixed_precision.py (200 "
           f"calibration images each; evaluation images: {evaluation_counts_text(rows)}), ranges by "
           "`auto` on the calibration images, biases corrected as the artifact's are; output SQNR on the "
           "evaluation images against the float model. The head: the global pooling and the classifier (and a "
           "softmax head's softmax); dynamic: the classifier's weights int8, its input quantized per image; "
           "\"as written before\": before session 55 a float32 output read the dynamic-range classifier's result "
           "back off the int8 grid of the QUANTIZE litert-quantizer writes behind it (the same artifact with an "
           "int8 output, dequantized).", "",
           "| model | rule | full int8 dB | " + " | ".join(f"{column} (gain)" for column in list(ROUTES)[1:]) + " |",
           "|---|---|---|" + "---|" * (len(ROUTES) - 1)]
    for r in rows:
        scores = r["evaluation_db"]
        out.append(f"| {r['model']} | {r['rule']} | {scores['full int8']:.2f} | " + " | ".join(
            f"{scores[column]:.2f} ({scores[column] - scores['full int8']:+.2f})" for column in list(ROUTES)[1:])
            + " |")
    count = len(gains["full int8"])
    out += ["", f"Logits heads ({count}): mean gain over full int8, "
            + "; ".join(f"{column} {sum(values) / count:+.2f} dB (least {min(values):+.2f})"
                        for column, values in gains.items() if column != "full int8")
            + ". On a softmax head the softmax runs in float32 in either precision, so its output never was "
            "requantized: the two dynamic columns agree there.", "", behind_text(rows)]
    return out


def evaluation_counts_text(rows):
    """How many evaluation images the rows were scored on, e.g. "397 (8 models), 2300 (4 models)"."""
    counts = {}
    for r in rows:
        counts[r["evaluation_images"]] = counts.get(r["evaluation_images"], 0) + 1
    return ", ".join(f"{images} ({models} models)" for images, models in counts.items())


def behind_text(rows, by_db=1.0):
    """Where the dynamic-range head falls more than `by_db` short of the float32 head (its own classifier's
    quantization: weights and per-image input), said in one paragraph."""
    behind = [(r["model"], r["evaluation_db"]["float32 head"] - r["evaluation_db"]["dynamic head"]) for r in rows
              if r["evaluation_db"]["float32 head"] - r["evaluation_db"]["dynamic head"] > by_db]
    listed = "; ".join(f"{model} ({gap:.2f} dB)" for model, gap in behind) or "none"
    return (f"The dynamic-range head more than {by_db:g} dB short of the float32 head (the classifier's own int8 "
            f"weights and per-image input grid; either head alone ran at 0.94-1.02x full int8's p50 at 224 in "
            f"benchmarks/results/mixed_precision.md): {len(behind)} of {len(rows)}: "
            f"{listed}.")


def main(arguments=()):
    import json

    if "report" in arguments:
        saved = json.loads((RESULTS / "head_precision.json").read_text())
        (RESULTS / "head_precision.md").write_text("\n".join(lines(saved["rows"], saved["machine"])) + "\n")
        return
    rows = []
    for source in SOURCES:
        models, data = all_models(source)
        rows += [row(name, models, data) for name in models]
    described = machine()
    write_results("head_precision", {"machine": described, "rows": rows}, "\n".join(lines(rows, described)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
