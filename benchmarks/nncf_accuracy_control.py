"""NNCF's quantize_with_accuracy_control on a float ONNX model, as a reference
point for edge-resnet's own --min-sqnr search.

NNCF is not a dependency of edge-resnet: run this from its own environment,
made with the versions it was checked with:

    python3 -m venv /tmp/nncf-venv
    /tmp/nncf-venv/bin/pip install nncf==3.4.0 onnx==1.23.2 onnxruntime==1.32.0 numpy==2.4.6
    /tmp/nncf-venv/bin/python benchmarks/nncf_accuracy_control.py --float FLOAT.onnx \
        --calibration CAL.npy --validation VAL.npy --reference REF.npy --min-sqnr DB --output OUT.onnx

CAL.npy and VAL.npy hold preprocessed float32 model inputs (N, ...), fed one
at a time (batch 1); REF.npy holds the float model's outputs on VAL. The
result is written to OUT.onnx and one JSON line is printed on stdout
(NNCF's log and progress bars go to stderr).

The metric. NNCF keeps reverting quantized operations to float until
metric(float model) - metric(candidate) <= max_drop, so the metric must be
finite for the float model; SQNR is not (infinite against its own
outputs). The metric is therefore the noise-to-signal ratio taken from 1:

    metric = 1 - MSE / mean(REF^2) = 1 - 10^(-SQNR/10)

(MSE against REF over all output values; higher is better, 1 for the float
model when REF is its own onnxruntime output). Not -MSE, which is 0 for
the float model: NNCF 3.4 computes the RELATIVE drop, dividing by the float
model's metric, even when asked for the ABSOLUTE one, and fails with
ZeroDivisionError. "SQNR >= DB" is "metric >= 1 - 10^(-DB/10)", so with an
ABSOLUTE drop

    max_drop = metric(float model) - (1 - 10^(-DB/10))

which also keeps the budget exact when REF comes from elsewhere (e.g.
Keras) and the float model's metric is a little under 1. validation_fn
also returns the per-item values, so NNCF ranks operations by metric on its
ranking subset rather than by its own output distance; every item has the
same number of output values, so their mean is the overall metric.

Quantization settings: preset PERFORMANCE (symmetric weights and
activations), which NNCF picks for any model type but transformers
(--preset mixed: asymmetric activations, as TFLite's int8 scheme); the rest
at NNCF's defaults, including its activation ranges (the mean over samples
of each sample's min and max), unless --activation-ranges minmax asks for
the global min and max.
"""

import argparse
import json
import logging
import os
import re
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort

import nncf
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
from nncf.quantization.range_estimator import RangeEstimatorParametersSet

WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
# Operators that only move or select values: a DequantizeLinear before them
# still feeds the following Conv int8 values (NNCF quantizes the graph input
# ahead of the NHWC->NCHW Transpose and the Pad of the first Conv).
PASS_THROUGH_OPS = ("Transpose", "Pad", "MaxPool", "Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--float", dest="float_path", metavar="FLOAT.onnx", required=True, help="float ONNX model")
    parser.add_argument("--calibration", required=True, help=".npy of calibration inputs")
    parser.add_argument("--validation", required=True, help=".npy of validation inputs")
    parser.add_argument("--reference", required=True, help=".npy of the float model's outputs on them")
    parser.add_argument("--min-sqnr", type=float, required=True, help="output SQNR budget in dB on VAL")
    parser.add_argument("--output", required=True, help="where to write the int8 ONNX model")
    parser.add_argument("--subset-size", type=int, default=None,
                        help="NNCF's subset_size (calibration and ranking samples); default NNCF's 300")
    parser.add_argument("--preset", choices=("performance", "mixed"), default="performance")
    parser.add_argument("--activation-ranges", choices=("nncf-default", "minmax"), default="nncf-default")
    return parser.parse_args()


def model_input_name(model):
    initializers = {tensor.name for tensor in model.graph.initializer}
    return next(value.name for value in model.graph.input if value.name not in initializers)


def sqnr_db(metric):
    noise_to_signal = 1 - metric
    return float("inf") if noise_to_signal <= 0 else float(-10 * np.log10(noise_to_signal))


def float_operations(model):
    """Names of the Conv/Gemm/MatMul nodes whose data input does not come
    from a DequantizeLinear (looking through PASS_THROUGH_OPS)."""
    producers = {output: node for node in model.graph.node for output in node.output}

    def quantized(tensor):
        node = producers.get(tensor)
        while node is not None and node.op_type in PASS_THROUGH_OPS:
            node = producers.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    return [node.name for node in model.graph.node if node.op_type in WEIGHTED_OPS and not quantized(node.input[0])]


class NNCFLog(logging.Handler):
    """Keeps NNCF's log messages, to read its report of reverted operations."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def reverted_operations(self):
        # The final report: "K out of N were reverted back to the floating-point precision:\n\tname..."
        # NNCF prints it only when its loop ran and did not have to revert everything.
        for message in reversed(self.messages):
            if re.match(r"\d+ out of \d+ were reverted back", message):
                return [line.strip() for line in message.splitlines()[1:] if line.strip()]
        return None


def main():
    args = parse_args()
    # stdout carries the JSON line only: send everything else written to it
    # (NNCF's log handler, rich progress bars, onnxruntime) to stderr.
    json_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    model = onnx.load(args.float_path)
    input_name = model_input_name(model)
    calibration = np.load(args.calibration).astype(np.float32)
    validation = np.load(args.validation).astype(np.float32)
    reference = np.load(args.reference).astype(np.float32)
    if len(validation) != len(reference):
        sys.exit(f"{args.validation} has {len(validation)} items but {args.reference} has {len(reference)}")

    # Each validation item carries its reference output, so that
    # validation_fn can score whichever subset NNCF hands it.
    validation_items = [(validation[i : i + 1], reference[i : i + 1]) for i in range(len(validation))]
    signal_power = float(np.mean(reference.astype(np.float64) ** 2))

    def validation_fn(candidate, items):
        session = ort.InferenceSession(candidate.SerializeToString(), providers=["CPUExecutionProvider"])
        per_item = [1 - float(np.mean((session.run(None, {input_name: x})[0] - ref) ** 2)) / signal_power
                    for x, ref in items]
        return float(np.mean(per_item)), per_item

    float_metric = validation_fn(model, validation_items)[0]
    required_metric = 1 - 10 ** (-args.min_sqnr / 10)
    if float_metric <= required_metric:
        sys.exit(f"the float model itself is at {sqnr_db(float_metric):.2f} dB on VAL, "
                 f"below --min-sqnr {args.min_sqnr}")

    advanced = AdvancedQuantizationParameters()
    if args.activation_ranges == "minmax":
        advanced.activations_range_estimator_params = RangeEstimatorParametersSet.MINMAX
    optional = {} if args.subset_size is None else {"subset_size": args.subset_size}

    log = NNCFLog()
    logging.getLogger("nncf").addHandler(log)
    start = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))], lambda x: {input_name: x}),
        nncf.Dataset(validation_items, lambda item: {input_name: item[0]}),
        validation_fn,
        max_drop=float_metric - required_metric,
        drop_type=nncf.DropType.ABSOLUTE,
        preset=getattr(nncf.QuantizationPreset, args.preset.upper()),
        advanced_quantization_parameters=advanced,
        **optional,
    )
    seconds = time.perf_counter() - start
    onnx.save(quantized, args.output)

    metric = validation_fn(quantized, validation_items)[0]
    left_float = float_operations(quantized)
    result = {
        "nncf": nncf.__version__,
        "onnxruntime": ort.__version__,
        "seconds": round(seconds, 1),
        "preset": args.preset,
        "activation_ranges": args.activation_ranges,
        "min_sqnr_db": args.min_sqnr,
        "max_drop": float_metric - required_metric,
        "metric": metric,
        "sqnr_db": sqnr_db(metric),
        "met": metric >= required_metric,
        "float_operations": len(left_float),
        "float_operation_names": left_float,
        "weighted_operations": sum(node.op_type in WEIGHTED_OPS for node in quantized.graph.node),
        "nncf_reverted": log.reverted_operations(),
        "output": args.output,
    }
    print(json.dumps(result), file=json_out, flush=True)


if __name__ == "__main__":
    main()
