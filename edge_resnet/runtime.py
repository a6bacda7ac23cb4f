"""Running artifacts without TensorFlow: LiteRT for .tflite (tflite-runtime
or tensorflow.lite only as fallbacks), onnxruntime for .onnx."""

from pathlib import Path

from .errors import ModelError

TFLITE_RUNTIMES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),  # last resort: the deprecated tf.lite.Interpreter
)


def tflite_interpreter_module():
    """(runtime name, module with Interpreter) of the first TFLite runtime
    that imports."""
    from importlib import import_module

    for name, module_name in TFLITE_RUNTIMES:
        try:
            return name, import_module(module_name)
        except ImportError:
            continue
    raise ModelError('no TFLite runtime is installed: pip install "edge-resnet[runtime]"')


def tflite_interpreter(path, threads=1, delegates=True):
    """An allocated interpreter. `delegates=False` runs the built-in kernels
    only (no XNNPACK), which shows the model's own operator list."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    _, module = tflite_interpreter_module()
    options = {"model_path": str(path), "num_threads": threads}
    if not delegates:
        options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = module.Interpreter(**options)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ModelError(f"cannot load {path} as a TFLite model: {' '.join(str(error).split())[:200]}") from error
    return interpreter
