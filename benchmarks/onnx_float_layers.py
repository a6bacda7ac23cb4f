"""The int8 ONNX's budget search with the layers it keeps in float32
corrected (edge_resnet/quantize/onnx_bias_correction.py, session 50) and
without (as before: their biases kept), on models that correction was not
chosen on: it was written after the ResNet-34's and validation ResNet-18's
softmax heads of benchmarks/mixed_precision.py scored below the corrected
full int8 with their budget's float parts.

    python benchmarks/onnx_float_layers.py

Per model and head: mixed_precision.py's ONNX protocol (convert's split of
the digits the models never trained on: 200 calibration images, 397 to
evaluate; budget = the corrected full int8's held-out SQNR + 3 dB), the
search run twice on the very same images and statistics, once as shipped
and once with float32 layers' biases left as they are. Writes
benchmarks/results/onnx_float_layers.{json,md}.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import machine, write_results  # noqa: E402

COMMAND = "python benchmarks/onnx_float_layers.py"
ROUTES = {"float layers corrected (shipped)": True, "float layers' biases kept (before)": False}


def unseen_models():
    from trained import logit_scoring_resnet101, softmax_floor_resnet50, with_softmax

    for name, make, size, depth in (("ResNet-50 w0.5 32x32 seed 41", softmax_floor_resnet50, 32, 50),
                                    ("ResNet-101 w0.25 32x32 seed 23", logit_scoring_resnet101, 32, 101)):
        model = make()
        for head in ("logits", "softmax"):
            yield f"{name}, {head} head", (model if head == "logits" else with_softmax(model)), size, depth


def searched(entry, float_layers_corrected):
    """mixed_precision.measure_onnx of `entry`, the float32 layers' biases corrected or kept."""
    import mixed_precision

    from edge_resnet.quantize import onnx_bias_correction

    shipped = onnx_bias_correction.float_bias
    if not float_layers_corrected:
        onnx_bias_correction.float_bias = lambda weights, readers, name: False
    try:
        result = mixed_precision.measure_onnx(*entry)
    finally:
        onnx_bias_correction.float_bias = shipped
    result.pop("steps")
    return result


def lines(rows, described):
    out = ["# The int8 ONNX's float32 layers corrected too, on models it was not chosen on", "",
           f"`{COMMAND}`; {described['cpu']}, {described['cores']} cores. Budget: the corrected full int8's "
           "held-out SQNR + 3 dB (200 calibration digits, each scored by ranges from the other three quarters); "
           "evaluation: 397 other digits. Both routes search on the very same images and statistics.", "",
           "| model | route | budget dB | held-out full int8 -> mixed | evaluation full int8 -> mixed | "
           "gain on evaluation | met on evaluation within 1 dB | float parts (float operators) |",
           "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for route, result in row["routes"].items():
            held, evaluated = result["held_out_db"], result["evaluation_db"]
            out.append(f"| {row['model']} | {route} | {result['budget_db']:.2f} | {held['full int8']:.2f} -> "
                       f"{held['mixed']:.2f} | {evaluated['full int8']:.2f} -> {evaluated['mixed']:.2f} | "
                       f"{evaluated['mixed'] - evaluated['full int8']:+.2f} | "
                       f"{'yes' if evaluated['mixed'] >= result['budget_db'] - 1 else 'NO'} | "
                       f"{len(result['float_parts'])} ({result['float_operators']}): "
                       f"{', '.join(result['float_parts'])} |")
    return out


def main():
    described = machine()
    rows = []
    for entry in unseen_models():
        rows.append({"model": entry[0], "routes": {route: searched(entry, corrected)
                                                   for route, corrected in ROUTES.items()}})
        print(rows[-1], flush=True)
    write_results("onnx_float_layers", {"machine": described, "command": COMMAND, "rows": rows},
                  "\n".join(lines(rows, described)) + "\n")


if __name__ == "__main__":
    main()
