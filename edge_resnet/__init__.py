"""edge-resnet: take a Keras ResNet to the edge.

Names are imported on first use, so that `import edge_resnet` (and the
device-side modules) never pull in Keras or TensorFlow by themselves.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "build_resnet": "models",
    "resnet18": "models",
    "resnet34": "models",
    "resnet50": "models",
    "resnet101": "models",
    "resnet152": "models",
    "preprocess_input": "preprocess",
    "stage_table": "summary",
    "load_model": "models",
    "fold_batchnorm": "fold",
    "FoldReport": "fold",
    "Preprocessing": "data",
    "ImageSet": "data",
    "image_set": "data",
    "calibration_set": "data",
    "holdout_split": "data",
    "QuantizationRecipe": "recipe",
    "to_tflite": "tflite",
    "collect_statistics": "statistics",
    "ActivationStatistics": "statistics",
    "RangeMethod": "ranges",
    "activation_ranges": "ranges",
    "quantize_tflite_file": "int8_tflite",
    "inspect_tflite": "tflite_inspect",
    "to_onnx": "onnx_export",
    "open_runner": "runtime",
    "compare": "parity",
    "GoldenReference": "golden",
    "write_golden": "golden",
    "merge_golden": "golden",
    "ParityResult": "parity",
    "layer_errors": "layer_debug",
    "write_reports": "report",
    "convert": "convert",
    "ConvertConfig": "convert",
    "EdgeResnetError": "errors",
    "ConfigError": "errors",
    "WeightsError": "errors",
    "ModelError": "errors",
    "DataError": "errors",
    "ConversionError": "errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edge_resnet' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__():
    return __all__
