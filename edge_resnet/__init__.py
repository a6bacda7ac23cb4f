"""edge-resnet: take a Keras ResNet to the edge.

Names are imported on first use, so that `import edge_resnet` (and the
device-side modules) never pull in Keras or TensorFlow by themselves.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "build_resnet": "model.resnet",
    "resnet18": "model.resnet",
    "resnet34": "model.resnet",
    "resnet50": "model.resnet",
    "resnet101": "model.resnet",
    "resnet152": "model.resnet",
    "preprocess_input": "data.preprocess",
    "stage_table": "model.summary",
    "load_model": "model.resnet",
    "fold_batchnorm": "model.fold",
    "FoldReport": "model.fold",
    "Preprocessing": "data.images",
    "ImageSet": "data.images",
    "image_set": "data.images",
    "calibration_set": "data.images",
    "holdout_split": "data.images",
    "QuantizationRecipe": "quantize.recipe",
    "to_tflite": "quantize.tflite",
    "collect_statistics": "quantize.statistics",
    "ActivationStatistics": "quantize.statistics",
    "RangeMethod": "quantize.ranges",
    "activation_ranges": "quantize.ranges",
    "quantize_tflite_file": "quantize.int8_tflite",
    "inspect_tflite": "device.tflite_inspect",
    "to_onnx": "quantize.onnx_export",
    "open_runner": "device.runtime",
    "compare": "check.parity",
    "GoldenReference": "check.golden",
    "write_golden": "check.golden",
    "merge_golden": "check.golden",
    "ParityResult": "check.parity",
    "layer_errors": "check.layer_debug",
    "write_reports": "check.report",
    "QuantizeRequest": "quantize.workflow",
    "quantize_artifact": "quantize.workflow",
    "CompareRequest": "check.workflows",
    "compare_artifacts": "check.workflows",
    "ReferenceRequest": "check.workflows",
    "write_reference": "check.workflows",
    "BenchRequest": "check.workflows",
    "bench_artifacts": "check.workflows",
    "MergeRequest": "check.workflows",
    "FoldRequest": "model.source",
    "save_folded": "model.source",
    "SummaryRequest": "model.source",
    "summary_table": "model.source",
    "CompileRequest": "quantize.ethos_u",
    "compile_for_npu": "quantize.ethos_u",
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
