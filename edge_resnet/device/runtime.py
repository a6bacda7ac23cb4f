"""Running artifacts without TensorFlow: LiteRT for .tflite (tflite-runtime
or tensorflow.lite only as fallbacks), onnxruntime for .onnx."""

import functools
import platform
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..quiet import native_output_silenced

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


def tflite_interpreter(path, threads=1, delegates=True, content=None):
    """An allocated interpreter of the file at `path`, or of the model bytes
    `content` (`path` then only names it). `delegates=False` runs the
    built-in kernels only (no XNNPACK), which shows the model's own operator
    list."""
    path = Path(path)
    if content is None and not path.is_file():
        raise ModelError(f"model file not found: {path}")
    _, module = tflite_interpreter_module()
    source = {"model_path": str(path)} if content is None else {"model_content": bytes(content)}
    options = {**source, "num_threads": threads}
    if not delegates:
        options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with native_output_silenced():  # the runtime's "Created ... XNNPACK delegate" line
            interpreter = module.Interpreter(**options)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        reason = " ".join(str(error).split())
        if "custom op" in reason and "ethos-u" in reason:
            raise ModelError(f"{path} holds Vela's ethos-u operator (a model compiled for an Arm Ethos-U NPU), which "
                             "only that NPU's runtime runs; give the int8 TFLite it was compiled from") from error
        raise ModelError(f"{path} is not a TFLite model this runtime can load (truncated, damaged, or another kind "
                         f"of file: {shortened(reason)})") from error
    return interpreter


def shortened(text, limit=120):
    """`text` cut at a word boundary to about `limit` characters (an ellipsis where cut)."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def quantize(values, scale, zero_point, dtype):
    info = np.iinfo(dtype)
    return np.clip(np.rint(values / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values, scale, zero_point):
    return (values.astype(np.float32) - zero_point) * np.float32(scale)


IMAGE_INPUT_TYPES = ("float32", "int8", "uint8")


def image_input_problem(inputs, shape, dtype):
    """Why a model is not one this toolkit can feed images to (in words), or None: it takes one input of
    (batch, height, width, channels), every size but the batch fixed (`shape`: None or a name where dynamic),
    of `dtype` float32, int8 or uint8."""
    fix = "export it with one image input (batch, height, width, channels) of float32, int8 or uint8"
    if inputs != 1:
        return f"it has {inputs} inputs, where an image classifier has one; {fix}"
    if len(shape) != 4 or not all(isinstance(size, int) and size > 0 for size in shape[1:]):
        return (f"its input has the shape {list(shape)}, where edge-resnet feeds (batch, height, width, channels) "
                "with every size but the batch fixed; export it with a fixed input size")
    if dtype not in IMAGE_INPUT_TYPES:
        return f"its input is {dtype}, where edge-resnet feeds {', '.join(IMAGE_INPUT_TYPES)} images; {fix}"
    return None


def check_image_input(path, inputs, shape, dtype):
    if problem := image_input_problem(inputs, shape, dtype):
        raise ModelError(f"{path} cannot be run on images: {problem}")


def tflite_shape_signature(detail):
    """A TFLite tensor's shape with -1 where it is dynamic; its shape where the runtime gives no signature."""
    signature = detail.get("shape_signature")
    return detail["shape"] if signature is None or len(signature) != len(detail["shape"]) else signature


class TfliteRunner:
    """Float images in, float outputs out, whatever the model's I/O types
    (int8/uint8 tensors are quantized and dequantized with their own
    parameters). TFLite models take one sample per invoke."""

    def __init__(self, path, threads=2, content=None):
        self.path = Path(path)
        self.runtime, _ = tflite_interpreter_module()
        self.interpreter = tflite_interpreter(path, threads=threads, content=content)
        inputs = self.interpreter.get_input_details()
        signature = [int(size) for size in tflite_shape_signature(inputs[0])] if inputs else []
        check_image_input(path, len(inputs), [size if size > 0 else None for size in signature],
                          np.dtype(inputs[0]["dtype"]).name if inputs else None)
        if signature[0] > 1:  # made for a fixed batch: this runner feeds one image at a time
            self.resize_batch(inputs[0], signature[0])
            inputs = self.interpreter.get_input_details()
        self.input = inputs[0]
        self.output = self.interpreter.get_output_details()[0]

    def resize_batch(self, detail, size):
        try:
            self.interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]], strict=False)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ModelError(f"{self.path} takes batches of {size} images only and cannot be resized to one image: "
                             f"export it with a batch of 1 or a dynamic batch") from error

    @property
    def input_dtype(self):
        return np.dtype(self.input["dtype"])

    @property
    def input_shape(self):
        """One sample's shape, without the batch dimension."""
        return tuple(int(size) for size in self.input["shape"][1:])

    def feed(self, sample):
        """Set one float sample (H, W, C) as the input tensor."""
        value = sample[None]
        if np.issubdtype(self.input_dtype, np.integer):
            scale, zero_point = self.input["quantization"]
            value = quantize(value, scale, zero_point, self.input_dtype)
        self.interpreter.set_tensor(self.input["index"], value.astype(self.input_dtype, copy=False))

    def result(self, output=None):
        """The float value of the graph output `output` (a detail of
        get_output_details(); the first unless given) for the last sample."""
        output = output or self.output
        raw = self.interpreter.get_tensor(output["index"])[0]
        if np.issubdtype(raw.dtype, np.integer):
            return dequantize(raw, *output["quantization"])
        return raw.astype(np.float32)

    def outputs(self, start, batch):
        """Outputs of `batch`, the images from `start` on (the interface parity.compare runs candidates by)."""
        return self.predict(batch)

    def predict(self, images):
        return self.predict_every_output(images, [self.output])[0]

    def predict_every_output(self, images, details=None):
        """One array of outputs on `images` per graph output (of `details`,
        every one unless given), in graph order."""
        details = details or self.interpreter.get_output_details()
        outputs = [[] for _ in details]
        for sample in images:
            self.feed(sample)
            self.interpreter.invoke()
            for detail, values in zip(details, outputs):
                values.append(self.result(detail))
        return [np.stack(values) for values in outputs]


# metadata_props keys that carry integer I/O quantization in our ONNX files
ONNX_QUANT_KEYS = ("input_scale", "input_zero_point", "output_scale", "output_zero_point")
WEIGHT_BITS_KEY = "weight_bits"  # our int8 ONNX files: "7" (onnxruntime's reduce_range) or "8"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")


@functools.cache
def cpu_flags():
    """This x86 CPU's feature flags (agent.cpuinfo_fields); None where /proc/cpuinfo has none."""
    from .agent import cpuinfo_fields

    flags = cpuinfo_fields().get("flags")
    return None if flags is None else frozenset(flags.split())


def u8s8_saturates(machine, flags):
    """Whether onnxruntime's U8S8 kernels on this CPU add u8*s8 products
    pairwise in int16 (x86 without VNNI), so that full 8-bit weights can
    overflow them; None where the flags are unknown."""
    if machine.lower() not in X86_MACHINES:
        return False
    if flags is None:
        return None
    return not {"avx512_vnni", "avx_vnni"} & set(flags)


def saturation_note(name, weight_bits, machine, flags):
    """One line when an int8 ONNX with full 8-bit weights runs where
    onnxruntime's default U8S8 kernels can saturate; None otherwise."""
    if weight_bits != "8" or not u8s8_saturates(machine, flags):
        return None
    return (f"note: {name} has full 8-bit weights and this CPU (x86 without VNNI) adds onnxruntime's u8*s8 products "
            "in int16, which they can overflow: its outputs here may be off. Run onnxruntime with session option "
            "session.x64quantprecision=1 (exact, slower kernels), or make the model without --full-range (7-bit "
            "weights)")


ONNX_INPUT_TYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


class OnnxRunner:
    """onnxruntime on the CPU provider by default; batches of any size."""

    def __init__(self, path, threads=2, providers=("CPUExecutionProvider",), profile=False, float_io=True):
        """`float_io`: float images will be fed and float outputs read (refused at once where the model's
        integer I/O cannot be mapped); False for a caller that feeds the model's own input type."""
        try:
            import onnxruntime
        except ImportError as error:
            raise ModelError('onnxruntime is not installed: pip install "edge-resnet[runtime]"') from error
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        self.runtime = "onnxruntime"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.profile_folder = None
        if profile:
            import tempfile

            self.profile_folder = Path(tempfile.mkdtemp(prefix="edge-resnet-profile-"))
            options.enable_profiling = True
            options.profile_file_prefix = str(self.profile_folder / "ort")
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as error:  # onnxruntime raises its own untyped errors; one line, then stop
            raise ModelError(f"cannot load {self.path} as an ONNX model: {' '.join(str(error).split())[:200]}") from error
        inputs = self.session.get_inputs()
        check_image_input(self.path, len(inputs), list(inputs[0].shape) if inputs else [],
                          ONNX_INPUT_TYPES.get(inputs[0].type, inputs[0].type) if inputs else None)
        self.input = inputs[0]
        self.output_name = self.session.get_outputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.quantization = {key: float(meta[key]) for key in ONNX_QUANT_KEYS if key in meta}
        output_type = self.session.get_outputs()[0].type
        if float_io and (problem := integer_io_problem(inputs[0].type, output_type, self.quantization)):
            raise ModelError(f"{self.path} cannot be run on images: {problem}")
        batch = inputs[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.note = saturation_note(self.path.name, meta.get(WEIGHT_BITS_KEY), platform.machine(), cpu_flags())

    @property
    def input_shape(self):
        return tuple(self.input.shape[1:])

    @property
    def input_dtype(self):
        return np.dtype(ONNX_INPUT_TYPES[self.input.type])

    def operator_profile(self):
        """Total milliseconds per operator type over the profiled runs,
        slowest first (needs profile=True)."""
        import json
        import shutil

        try:
            events = json.loads(Path(self.session.end_profiling()).read_text())
        finally:
            shutil.rmtree(self.profile_folder, ignore_errors=True)
        totals = {}
        for event in events:
            if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                op_type = event.get("args", {}).get("op_name", "?")
                totals[op_type] = totals.get(op_type, 0.0) + event["dur"] / 1e3
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def outputs(self, start, batch):
        return self.predict(batch)

    def predict(self, images):
        return self.predict_every_output(images, [self.output_name])[0]

    def predict_every_output(self, images, names=None):
        """One array of outputs on `images` per graph output (of `names`,
        every one unless given), in graph order; an integer first output is
        dequantized by the model's metadata."""
        images = np.asarray(images, dtype=np.float32)
        if np.issubdtype(self.input_dtype, np.integer):
            images = quantize(images, self.quantization["input_scale"], self.quantization["input_zero_point"],
                              self.input_dtype)
        names = names or [output.name for output in self.session.get_outputs()]
        raws = self.run_in_batches(names, images)
        if np.issubdtype(raws[0].dtype, np.integer):
            raws[0] = dequantize(raws[0], self.quantization["output_scale"], self.quantization["output_zero_point"])
        return [raw.astype(np.float32) for raw in raws]


    def run_in_batches(self, names, images):
        """The session's outputs `names` on `images`; a model made for a fixed batch is run on batches of that
        size, the last one filled up with copies of its last image, whose outputs are dropped."""
        if self.fixed_batch is None or len(images) == self.fixed_batch:
            return self.session.run(names, {self.input.name: images})
        parts = []
        for start in range(0, len(images), self.fixed_batch):
            chunk = images[start:start + self.fixed_batch]
            filled = np.concatenate([chunk, np.repeat(chunk[-1:], self.fixed_batch - len(chunk), axis=0)])
            parts.append([raw[:len(chunk)] for raw in self.session.run(names, {self.input.name: filled})])
        return [np.concatenate(raws) for raws in zip(*parts)]


def integer_io_problem(input_type, output_type, quantization):
    """Why an ONNX model's integer input or first output cannot be mapped to and from float values (its scale
    and zero point are not in the metadata edge-resnet writes), or None."""
    for side, onnx_type in (("input", input_type), ("output", output_type)):
        if onnx_type in ("tensor(int8)", "tensor(uint8)") and not {f"{side}_scale", f"{side}_zero_point"} <= set(
                quantization):
            return (f"its {side} is {ONNX_INPUT_TYPES[onnx_type]} without the {side}_scale and {side}_zero_point "
                    f"metadata that map it to float values; make it with edge-resnet, or give it a float32 {side}")
    return None


def open_runner(path, threads=2, profile=False, float_io=True):
    """A runner for a .tflite or .onnx file (`profile`, `float_io`: onnxruntime only, see OnnxRunner)."""
    suffix = Path(path).suffix
    if suffix == ".tflite":
        return TfliteRunner(path, threads)
    if suffix == ".onnx":
        return OnnxRunner(path, threads, profile=profile, float_io=float_io)
    raise ModelError(f"cannot tell the runtime for {path}: expected a .tflite or .onnx file")
