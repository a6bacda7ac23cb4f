"""The package surface: lazy public names, and a device-side import that
pulls in no TensorFlow."""

import subprocess
import sys

import edge_resnet


def test_every_public_name_resolves():
    for name in edge_resnet.__all__:
        assert getattr(edge_resnet, name) is not None, name


def test_importing_the_package_and_runtime_side_loads_no_tensorflow_or_keras():
    code = (
        "import sys, edge_resnet, edge_resnet.runtime, edge_resnet.tflite_inspect, edge_resnet.data, "
        "edge_resnet.recipe, edge_resnet.preprocess, edge_resnet.parity, edge_resnet.report, "
        "edge_resnet.statistics, edge_resnet.ranges, edge_resnet.int8_tflite, edge_resnet.layer_debug; "
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_private_tensorflow_module_is_used():
    """The TFLite converter's calibrator and quantizer are private API; the
    toolkit calibrates and quantizes without them (tests may use them as
    oracles)."""
    from pathlib import Path

    package = Path(edge_resnet.__file__).parent
    users = [path.name for path in package.rglob("*.py") if "tensorflow.lite.python" in path.read_text()]
    assert users == []
