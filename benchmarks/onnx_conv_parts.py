"""Could the int8 ONNX's budget keep only convolutions in float32, not whole parts?

The int8 ONNX searches of issue 27's bar keep four to six whole parts
(residual blocks, the head) in float32 on the three logits heads that meet
their budget, and run 1.6-1.7x full int8 at 224 (bar: 1.5x). A timing in
session 58 left only those parts' convolutions float (their additions and
ReLUs int8) and ran 1.29-1.63x: cheaper, but whether the search can reach
the same budget so was never measured. Here the search runs twice on the
same models, images and budget (full int8 + 3 dB on the 200 held-out
calibration images, mixed_precision.measure_onnx): once as shipped, and
once with every part cut down to its convolutions and classifier
(onnx_export.onnx_parts narrowed to Conv/Gemm/MatMul nodes), so a part in
float32 leaves its activations quantized.

    python benchmarks/onnx_conv_parts.py
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import RESULTS, machine, use_repo_imports, write_results  # noqa: E402

# the int8 ONNX bar rows whose search met its budget (benchmarks/results/mixed_precision.md, "The bar on the int8
# ONNX"): the logits heads of the MNIST ResNet-50s and of the Fashion-MNIST ResNet-50 w0.25
MODELS = ("seed 89", "seed 97", "seed 103")
VARIANTS = {"whole parts (as shipped)": False, "convolutions alone": True}


def convolutions_only(onnx_parts):
    """onnx_parts with each part narrowed to its weight nodes (convolutions, the classifier)."""
    from edge_resnet.quantize.onnx_export import COMPUTE_OPS

    def parts(proto):
        weighted = {node.name for node in proto.graph.node if node.op_type in COMPUTE_OPS}
        return {part: tuple(name for name in nodes if name in weighted) for part, nodes in onnx_parts(proto).items()}

    return parts


def searched(entry, data, narrowed):
    """measure_onnx's search of `entry`, its parts narrowed to their convolutions where `narrowed`."""
    import edge_resnet.quantize.onnx_export as onnx_export
    from mixed_precision import measure_onnx

    shipped = onnx_export.onnx_parts
    onnx_export.onnx_parts = convolutions_only(shipped) if narrowed else shipped
    try:
        result = measure_onnx(*entry, data=data)
    finally:
        onnx_export.onnx_parts = shipped
    steps = result.pop("steps")
    result.pop("artifact")
    best = max(steps, key=lambda step: step["sqnr_db"])  # reached, whether or not the search could count it
    result["best_step"] = {key: best.get(key) for key in ("float_parts", "sqnr_db", "gain_images", "float_operators")}
    return result


def row(result):
    held, evaluation = result["held_out_db"], result["evaluation_db"]
    kept = (f"{len(result['float_parts'])} parts ({result['float_operators']} float convolutions)"
            if result["float_parts"] else "full int8")
    best = result["best_step"]
    reached = "" if result["met_on_held_out"] else (
        f" (its best step {best['sqnr_db']:.2f} with {len(best['float_parts'])} parts, half of that gain on "
        f"{best['gain_images']} images)" if best["gain_images"] is not None else "")
    return (f"{'met' if result['met_on_held_out'] else 'NOT met'}: {held['full int8']:.2f} -> {held['mixed']:.2f}"
            f"{reached}; {evaluation['full int8']:.2f} -> {evaluation['mixed']:.2f}; {kept}")


def markdown(result):
    described = result["machine"]
    lines = [
        "# The int8 ONNX's budget with convolutions alone in float32", "",
        "Command: `python benchmarks/onnx_conv_parts.py`", "",
        f"Machine: {described['cpu']}, {described['cores']} cores, {' '.join(described['isa'])}. Budget: full int8 "
        "+ 3 dB on the 200 held-out calibration images (as the int8 ONNX bar table). Each cell: on the held-out "
        "images whether the search met it, full int8 -> kept (dB; where not met, the best step it measured, "
        "and on how few images half of that step's gain rests: the search counts no gain that rests on "
        "3 images or fewer, mixed.FRAGILE_GAIN_IMAGES); on the evaluation images the same; what stays float32. "
        "No latency here (the search's own timings are at 32x32).", "",
        f"| model | {' | '.join(VARIANTS)} |", f"|---|{'---|' * len(VARIANTS)}"]
    for name, by_variant in result["rows"].items():
        lines.append(f"| {name} | {' | '.join(row(by_variant[variant]) for variant in VARIANTS)} |")
    lines += ["", result["summary"], ""]
    return "\n".join(lines)


def summary(rows):
    gains = {variant: [r[variant]["held_out_db"]["mixed"] - r[variant]["held_out_db"]["full int8"]
                       for r in rows.values()] for variant in VARIANTS}
    met = {variant: sum(r[variant]["met_on_held_out"] for r in rows.values()) for variant in VARIANTS}
    return "; ".join(f"{variant}: budget met on {met[variant]} of {len(rows)}, held-out gain "
                     f"{', '.join(f'{gain:+.2f}' for gain in gains[variant])} dB" for variant in VARIANTS) + "."


def main():
    use_repo_imports()
    import mixed_precision

    path = RESULTS / "onnx_conv_parts.json"
    saved = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    for models, data in mixed_precision.resnet50_data_sets():
        for entry in models():
            if "logits" not in entry[0] or not any(f"{tag} " in entry[0] for tag in MODELS):
                continue
            rows = saved["rows"].setdefault(entry[0], {})
            for variant, narrowed in VARIANTS.items():
                if variant not in rows:
                    rows[variant] = searched(entry, data, narrowed)
                    saved["machine"] = machine()
                    path.write_text(json.dumps(saved, indent=2) + "\n")
    saved["summary"] = summary(saved["rows"])
    write_results("onnx_conv_parts", saved, markdown(saved))


if __name__ == "__main__":
    main()
