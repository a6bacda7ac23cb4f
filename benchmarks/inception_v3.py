"""InceptionV3, a network no rule of edge-resnet was chosen on, trained and
quantized as a user would: its 3x3 average poolings pad (SAME), which
TFLite averages over the pixels inside the image only and XNNPACK had no
int8 kernel for (now a depthwise convolution times a map of area / pixels
inside, held exactly in int8: edge_resnet/quantize/xnnpack_rewrites.py).

    .venv/bin/python benchmarks/inception_v3.py

keras.applications InceptionV3 (75x75, its smallest, pixels / 255, logits
head) trained on digits 0..1199 as benchmarks/xnnpack_rewrites.py trains
its networks, and its softmax twin; the protocol of
benchmarks/resnet_v2.py (3 splits of the 597 digits it never trained on,
200 calibrate, 397 evaluate, every route of a split on the same images).
"Before": the padded pooling left as converted. Writes
benchmarks/results/inception_v3.{json,md}.
"""

import sys
from contextlib import contextmanager
from pathlib import Path

from common import machine, use_repo_imports, write_results

EPOCHS = 4
SIZE = 75
BEFORE = "padded pooling as converted"


@contextmanager
def padded_pooling_as_converted():
    from edge_resnet.quantize import xnnpack_rewrites

    on_grid = xnnpack_rewrites.padded_average_pool_on_grid
    xnnpack_rewrites.padded_average_pool_on_grid = lambda subgraph, operator: False
    try:
        yield
    finally:
        xnnpack_rewrites.padded_average_pool_on_grid = on_grid


def main():
    use_repo_imports()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from resnet_v2 import fidelity, markdown
    from xnnpack_rewrites import inception_v3

    result = {"machine": machine(), "fidelity": fidelity(lambda: inception_v3(SIZE), SIZE, EPOCHS,
                                                         padded_pooling_as_converted, BEFORE)}
    write_results("inception_v3", result, markdown(result, "InceptionV3: average poolings that pad",
                                                   "python benchmarks/inception_v3.py", "InceptionV3"))


if __name__ == "__main__":
    main()
