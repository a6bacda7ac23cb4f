"""Could the int8 ONNX keep a budget's parts in dynamic-range int8, as the
int8 TFLite does, instead of float32?

The budget search (edge_resnet/quantize/mixed.py) keeps the int8 ONNX's
parts in float32 only: on the int8 TFLite a part in dynamic-range int8
(int8 weights, activations quantized per image at run time) costs little
latency on XNNPACK, but on onnxruntime's CPU provider each float32 part of
a ResNet-50 at 224 adds about a tenth of full int8's latency, so the
ONNX searches that keep five or six parts miss issue 27's 1.5x bar. The
dynamic-range form onnxruntime has for a convolution is its own
`quantize_dynamic` (DynamicQuantizeLinear, ConvInteger, a float rescale).
Here every convolution of a full-width ResNet-50 at 224 (seeded weights)
is written so, with uint8 and with int8 weights, and timed beside the
float32 model and the static int8 ONNX (`to_onnx`'s QDQ, min/max ranges of
20 random images) in alternating rounds: if the dynamic model ran near
static int8, dynamic parts would be the cheaper fallback.

    python benchmarks/onnx_dynamic_convs.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import machine, write_results  # noqa: E402

WEIGHT_TYPES = ("QUInt8", "QInt8")


def dynamic_routes(float_path, folder):
    """{route: every convolution of the float ONNX at `float_path` in onnxruntime's dynamic-range int8}."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    paths = {}
    for weights in WEIGHT_TYPES:
        path = folder / f"dynamic_{weights}.onnx"
        quantize_dynamic(str(float_path), str(path), op_types_to_quantize=["Conv"],
                         weight_type=getattr(QuantType, weights), per_channel=True)
        paths[f"every convolution dynamic-range int8 ({weights} weights)"] = path
    return paths


def main():
    import onnxruntime

    from mixed_precision import onnx_latencies_at_224

    described = machine()
    medians = onnx_latencies_at_224(50, {}, dynamic_routes)
    int8 = medians["full int8"]
    rows = [f"| {route} | {p50:.2f} | {p50 / int8:.2f}x |" for route, p50 in medians.items()]
    markdown = "\n".join([
        "# The int8 ONNX's convolutions in onnxruntime's dynamic-range int8", "",
        "Command: `python benchmarks/onnx_dynamic_convs.py`", "",
        f"Machine: {described['cpu']}, {described['cores']} cores, {' '.join(described['isa'])}; onnxruntime "
        f"{onnxruntime.__version__}, CPU provider, 2 threads. A full-width ResNet-50 at 224, seeded weights, batch 1; "
        "p50 of 5 alternating rounds of 20 runs each.", "",
        "| route | p50 ms | against full int8 |", "|---|---|---|", *rows, ""])
    write_results("onnx_dynamic_convs", {"machine": described, "onnxruntime": onnxruntime.__version__,
                                         "p50_ms": medians}, markdown)


if __name__ == "__main__":
    main()
