"""Xception, a network no rule of edge-resnet was chosen on, trained and
quantized as a user would: its separable convolutions (written by the own
ONNX exporter since this benchmark; the int8 ONNX was refused before) and
its RELUs the converter cannot fuse (XNNPACK has no int8 RELU: now
depthwise convolutions of weight 1, edge_resnet/quantize/xnnpack_rewrites.py).

    .venv/bin/python benchmarks/xception.py

keras.applications Xception (71x71, its smallest, pixels / 255, logits
head) trained on digits 0..1199 as benchmarks/xnnpack_rewrites.py trains
its networks, and its softmax twin; the protocol of
benchmarks/resnet_v2.py (3 splits of the 597 digits it never trained on,
200 calibrate, 397 evaluate, every route of a split on the same images).
"Before": the RELU rewrite off. Writes benchmarks/results/xception.{json,md}.
"""

import sys
from contextlib import contextmanager
from pathlib import Path

from common import machine, use_repo_imports, write_results

EPOCHS = 4
SIZE = 71
BEFORE = "RELU as converted"


def xception():
    import keras

    return keras.applications.Xception(input_shape=(SIZE, SIZE, 3), weights=None, classes=10,
                                       classifier_activation=None)


@contextmanager
def relu_as_converted():
    from ai_edge_litert import schema_py_generated as schema

    from edge_resnet.quantize import xnnpack_rewrites

    rewrites = xnnpack_rewrites.rewrites
    xnnpack_rewrites.rewrites = lambda: {code: rewrite for code, rewrite in rewrites().items()
                                         if code not in (schema.BuiltinOperator.RELU, schema.BuiltinOperator.RELU6)}
    try:
        yield
    finally:
        xnnpack_rewrites.rewrites = rewrites


def main():
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from resnet_v2 import fidelity, markdown

    result = {"machine": machine(), "fidelity": fidelity(xception, SIZE, EPOCHS, relu_as_converted, BEFORE)}
    write_results("xception", result, markdown(result, "Xception: separable convolutions, RELUs of their own",
                                               "python benchmarks/xception.py", "Xception"))


if __name__ == "__main__":
    main()
