"""Fold BatchNormalization into the Conv2D / DepthwiseConv2D / Dense layer
that feeds it, on any Keras functional model.

The folded model is rebuilt from the original's config with the BN layers
removed and their consumers rewired to the convolution (which keeps its
name), then given W' = W * s and b' = beta + (b - mean) * s per output
channel, s = gamma / sqrt(var + eps). A BatchNormalization with no
convolution of its own to fold into (one after an addition or a pooling, as
ResNetV2's pre-activations, or after an activation) becomes the 1x1
DepthwiseConv2D computing the same x * s + (beta - mean * s), under its own
name: TFLite would make it a MUL and an ADD, two int8 roundings, and give
the scale vector s one int8 scale for every channel (a channel of a small
s then gets a few levels), where a depthwise convolution is one operator
with a weight scale per channel. Patterns that cannot be computed exactly
either way stay in place and are reported; the original model is not
touched.
"""

import copy
import warnings
from dataclasses import dataclass, replace

import keras
import numpy as np

from ..errors import ConfigError, ConversionError, ModelError

FOLDABLE_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D, keras.layers.Dense)
MODEL_OUTPUT = "<model output>"
# Folding is exact up to float32 rounding (about 1e-6 of the output scale on the ResNets measured): a difference
# this large means the rebuilt model is another function...
FOLD_TOLERANCE = 1e-3
# ...unless the network moves that much for float32 rounding alone: an untrained keras.applications ResNet152 (32x32)
# moved 5.6e-4 of its output scale when its convolutions' weights moved by 6e-8 of themselves, and its fold 4.3e-3
# on real images. Then a difference within this many times what moving every weight by up to one float32 step
# (rounding_floor) does is rounding too; a rebuild that lost a layer moves the outputs by a large part of their scale.
ROUNDING_MARGIN = 20


class FoldWarning(UserWarning):
    """A BatchNormalization layer was left in place."""


@dataclass(frozen=True)
class FoldReport:
    folded: tuple  # ((conv or dense name, bn name), ...)
    skipped: tuple  # ((bn name, reason), ...)
    params_before: int
    params_after: int
    probe_max_abs_diff: float  # folded vs original outputs on the probe batch
    probe_output_scale: float  # max |original output| on the probe batch
    probe_top1_agreement: object  # fraction with the same argmax; None if not a classifier
    as_depthwise: tuple = ()  # ((bn name, why it did not fold), ...): each now a 1x1 DepthwiseConv2D of its name
    # of the output scale: what float32 rounding alone moves the outputs by (rounding_floor); measured only where the
    # difference passes FOLD_TOLERANCE
    probe_rounding_floor: object = None

    @property
    def tolerance(self):
        """The largest probe_relative_diff that is float32 rounding."""
        return max(FOLD_TOLERANCE, ROUNDING_MARGIN * (self.probe_rounding_floor or 0.0))

    @property
    def probe_relative_diff(self):
        if not self.probe_output_scale:  # all-zero outputs: any difference at all is a changed model
            return 0.0 if self.probe_max_abs_diff == 0 else float("inf")
        return self.probe_max_abs_diff / self.probe_output_scale

    def to_dict(self):
        return {
            "folded": [{"layer": layer, "batchnorm": bn} for layer, bn in self.folded],
            "skipped": [{"batchnorm": bn, "reason": reason} for bn, reason in self.skipped],
            "as_depthwise": [{"batchnorm": bn, "why_not_folded": reason} for bn, reason in self.as_depthwise],
            "params_before": self.params_before,
            "params_after": self.params_after,
            "probe_max_abs_diff": self.probe_max_abs_diff,
            "probe_output_scale": self.probe_output_scale,
            "probe_relative_diff": self.probe_relative_diff,
            "probe_top1_agreement": self.probe_top1_agreement,
            "probe_rounding_floor": self.probe_rounding_floor,
        }

    def format(self):
        lines = [
            f"folded {len(self.folded)} BatchNormalization layers"
            + (f", made {len(self.as_depthwise)} a 1x1 depthwise convolution" if self.as_depthwise else "")
            + f", left {len(self.skipped)}",
            f"parameters {self.params_before:,} -> {self.params_after:,} "
            f"({self.params_before - self.params_after:,} fewer)",
            f"probe: max |diff| {self.probe_max_abs_diff:.3g} "
            f"({self.probe_relative_diff:.2e} of the output scale {self.probe_output_scale:.3g})"
            + (
                ""
                if self.probe_top1_agreement is None
                else f", top-1 agreement {self.probe_top1_agreement:.1%}"
            )
            + ("" if self.probe_rounding_floor is None else
               f"; float32 rounding alone moves them {self.probe_rounding_floor:.2e} of it"),
        ]
        lines += [f"1x1 depthwise convolution: {bn}: {reason}" for bn, reason in self.as_depthwise]
        lines += [f"left in place: {bn}: {reason}" for bn, reason in self.skipped]
        return "\n".join(lines)


def _producers(node_config):
    """Names of the layers whose outputs a serialized call node reads."""
    found = []

    def visit(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                found.append(value["config"]["keras_history"][0])
            else:
                for item in value.values():
                    visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(node_config)
    return found


def _consumers(config):
    """layer name -> names of the layers (or the model output) reading it,
    one entry per use."""
    consumers = {}
    for layer_config in config["layers"]:
        for node in layer_config["inbound_nodes"]:
            for producer in _producers(node):
                consumers.setdefault(producer, []).append(layer_config["name"])
    for name, _, _ in _output_refs(config):
        consumers.setdefault(name, []).append(MODEL_OUTPUT)
    return consumers


def _output_refs(config):
    outputs = config["output_layers"]
    # A single output may be stored as one [name, node, tensor] triple.
    return [outputs] if outputs and isinstance(outputs[0], str) else outputs


def _channel_axis(layer):
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return 1
    return len(layer.output.shape) - 1


def _why_not_replaceable(bn, layer_config):
    """None when `bn` computes a fixed per-channel x * s + t (a 1x1 depthwise convolution can), else the reason."""
    nodes = layer_config["inbound_nodes"]
    if len(nodes) != 1:
        return f"called {len(nodes)} times (shared layer)"
    if nodes[0].get("kwargs", {}).get("training"):
        return "called with training=True: it uses batch statistics, not its moving averages"
    if bn.renorm:
        return "batch renormalization is not folded"
    return None


def _why_not_depthwise(bn):
    """None when a 1x1 DepthwiseConv2D can take `bn`'s place, else the reason."""
    rank = len(bn.input.shape)
    if rank != 4 or bn.axis % rank != 3:
        return f"normalizes axis {bn.axis} of a rank-{rank} tensor, not the channels of an image (NHWC)"
    return None


def _why_not_foldable(bn, producer, layer_config, consumers):
    """None when `bn` can be folded into `producer`, else the reason."""
    replaceable = _why_not_replaceable(bn, layer_config)
    if replaceable:
        return replaceable
    if producer is None:
        return "its input is not a single layer output"
    if type(producer) not in FOLDABLE_LAYERS:
        return f"follows {type(producer).__name__} {producer.name!r}, not Conv2D/DepthwiseConv2D/SeparableConv2D/Dense"
    if len(producer._inbound_nodes) != 1:
        return f"{producer.name!r} is called more than once (shared layer)"
    if producer.get_config().get("activation", "linear") != "linear":
        return f"{producer.name!r} applies {producer.activation.__name__} before the BatchNormalization"
    other_uses = [name for name in consumers.get(producer.name, []) if name != bn.name]
    if other_uses:
        return f"the output of {producer.name!r} also feeds {other_uses[0]!r}"
    if len(consumers.get(producer.name, [])) != 1:
        return f"the output of {producer.name!r} is read more than once"
    bn_axis = bn.axis % len(bn.input.shape)
    if bn_axis != _channel_axis(producer):
        return f"normalizes axis {bn.axis}, not the channel axis of {producer.name!r}"
    return None


def plan_folds(model, config):
    """Split the model's BatchNormalization layers into foldable
    (producer name, bn name) pairs, (bn name, why not folded) ones a 1x1
    depthwise convolution takes the place of, and (bn name, reason)
    leftovers."""
    consumers = _consumers(config)
    by_name = {layer_config["name"]: layer_config for layer_config in config["layers"]}
    folds, as_depthwise, skipped = [], [], []
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(
            isinstance(inner, keras.layers.BatchNormalization) for inner in layer._flatten_layers()
        ):
            skipped.append((layer.name, "BatchNormalization inside a nested model; fold that model first"))
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        layer_config = by_name[layer.name]
        producers = [name for node in layer_config["inbound_nodes"] for name in _producers(node)]
        producer = model.get_layer(producers[0]) if len(producers) == 1 else None
        reason = _why_not_foldable(layer, producer, layer_config, consumers)
        if not reason:
            folds.append((producer.name, layer.name))
            continue
        if _why_not_replaceable(layer, layer_config):  # training mode, shared, renorm: the reason given
            skipped.append((layer.name, reason))
        elif no_depthwise := _why_not_depthwise(layer):
            skipped.append((layer.name, f"{reason}; and it {no_depthwise}"))
        else:
            as_depthwise.append((layer.name, reason))
    return folds, as_depthwise, skipped


def _rewire(value, renames):
    """Replace references to removed layers, in place, in serialized nodes."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = value["config"]["keras_history"]
            history[0] = renames.get(history[0], history[0])
        else:
            for item in value.values():
                _rewire(item, renames)
    elif isinstance(value, (list, tuple)):
        if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and value[0] in renames:
            value[0] = renames[value[0]]  # a [name, node, tensor] output reference
        for item in value:
            _rewire(item, renames)


def folded_config(config, folds, as_depthwise=()):
    """The model config without the folded BN layers, their consumers reading
    the convolution instead, every folded convolution given a bias, and the
    BN layers named in `as_depthwise` 1x1 depthwise convolutions."""
    config = copy.deepcopy(config)
    for layer_config in config["layers"]:
        if layer_config["name"] in as_depthwise:
            layer_config.update(_depthwise_config(layer_config))
            for node in layer_config["inbound_nodes"]:  # BatchNormalization's mask and training: a convolution
                for keyword in ("mask", "training"):  # takes neither
                    node.get("kwargs", {}).pop(keyword, None)
    renames = {bn: producer for producer, bn in folds}
    producers = set(renames.values())
    config["layers"] = [layer for layer in config["layers"] if layer["name"] not in renames]
    for layer_config in config["layers"]:
        _rewire(layer_config["inbound_nodes"], renames)
        if layer_config["name"] in producers:
            layer_config["config"]["use_bias"] = True
            layer_config["config"]["bias_initializer"] = "zeros"
    _rewire(config["output_layers"], renames)
    return config


def _depthwise_config(bn_config):
    """The serialized 1x1 DepthwiseConv2D (with bias) to stand where `bn_config`'s layer stood, under its name."""
    depthwise = keras.layers.DepthwiseConv2D(1, use_bias=True, name=bn_config["name"], data_format="channels_last",
                                             dtype=bn_config["config"].get("dtype"),
                                             trainable=bn_config["config"].get("trainable", True))
    serialized = keras.layers.serialize(depthwise)
    return {key: serialized[key] for key in ("module", "class_name", "config", "registered_name") if key in serialized}


def batchnorm_scale_shift(bn):
    """(s, t) in float64: the inference-mode `bn` computes x * s + t per channel."""
    channels = int(np.asarray(bn.moving_mean).shape[0])
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones(channels)
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros(channels)
    scale = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
    return scale, beta - np.asarray(bn.moving_mean, np.float64) * scale


def depthwise_weights(bn):
    """(kernel, bias) of the 1x1 DepthwiseConv2D computing `bn`."""
    scale, shift = batchnorm_scale_shift(bn)
    return scale.reshape(1, 1, -1, 1).astype(np.float32), shift.astype(np.float32)


def folded_weights(layer, bn):
    """The weights of `layer` with the inference-mode `bn` after it merged
    in, computed in float64: (kernel, bias), or for a SeparableConv2D
    (depthwise kernel, pointwise kernel, bias), the pointwise half scaled."""
    scale, shift = batchnorm_scale_shift(bn)
    if isinstance(layer, keras.layers.SeparableConv2D):
        pointwise, bias = _scaled(layer, layer.pointwise_kernel, scale, shift)
        return np.asarray(layer.depthwise_kernel, np.float32), pointwise, bias
    return _scaled(layer, layer.kernel, scale, shift)


def _scaled(layer, kernel, scale, shift):
    """(kernel, bias) as float32 with output channel c scaled by scale[c] and shift[c] added."""
    kernel = np.asarray(kernel, dtype=np.float64)
    bias = np.asarray(layer.bias, np.float64) if layer.use_bias else np.zeros(len(scale))
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # Output channel c * multiplier + m comes from input channel c.
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale  # output channels are the kernel's last axis
    new_bias = shift + bias * scale
    return kernel.astype(np.float32), new_bias.astype(np.float32)


def _as_functional(model):
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not hasattr(model, "get_config") or "output_layers" not in (model.get_config() or {}):
        raise ConfigError(
            f"fold_batchnorm needs a functional or Sequential Keras model. Received: {type(model).__name__}"
        )
    return model


def default_probe(model, batch_size=4, seed=0):
    shape = (batch_size,) + tuple(model.input_shape[1:])
    return np.random.default_rng(seed).normal(0.0, 1.0, shape).astype(np.float32)


def _outputs(model, probe):
    """The model's outputs through Keras's compiled inference: an eager call
    keeps every activation until it returns (3.7 GB peak for ResNet-152 at
    224 on 8 images, against 1.4 GB this way)."""
    return np.asarray(model.predict_on_batch(probe), dtype=np.float64)


def runnable_outputs(model, probe):
    """_outputs, with a model the Keras backend cannot run here refused in one line."""
    try:
        return _outputs(model, probe)
    except MemoryError:
        raise
    except Exception as error:  # the backend's own error types: TensorFlow's, JAX's
        reason = " ".join(str(error).split("\n\n")[-1].split())[:200]
        raise ModelError(f"Keras cannot run {model.name!r} on this machine ({reason}); save it with layers this "
                         "backend runs (e.g. channels_last convolutions on a CPU)") from error


def rounding_floor(model, probe, reference):
    """How far `model`'s outputs on `probe` move, as a share of max |`reference`|, when each of its float weights
    moves by one float32 step up or down at random (seeded) or stays: what rounding the weights once more does,
    as a fold rounds the products it makes. The weights are put back."""
    weights = model.get_weights()
    rng = np.random.default_rng(0)

    def moved(array):
        if array.dtype != np.float32:
            return array
        steps = rng.integers(-1, 2, array.shape)
        return np.where(steps == 0, array, np.nextafter(array, np.where(steps > 0, np.inf, -np.inf).astype(np.float32)))

    try:
        model.set_weights([moved(array) for array in weights])
        outputs = _outputs(model, probe)
    finally:
        model.set_weights(weights)
    return float(np.abs(outputs - reference).max() / np.abs(reference).max())


def fold_batchnorm(model, probe=None):
    """Return (folded_model, FoldReport).

    `probe` is a batch of model inputs on which the folded model is checked
    against the original; preprocessed real images make the check meaningful
    (default: seeded standard-normal inputs).
    """
    source = _as_functional(model)
    config = source.get_config()
    folds, as_depthwise, skipped = plan_folds(source, config)
    replaced = {bn for bn, _ in as_depthwise}
    folded = keras.Model.from_config(folded_config(config, folds, replaced))
    merged = {producer: bn for producer, bn in folds}
    for layer in folded.layers:
        if layer.name in merged:
            layer.set_weights(list(folded_weights(source.get_layer(layer.name), source.get_layer(merged[layer.name]))))
        elif layer.name in replaced:
            layer.set_weights(list(depthwise_weights(source.get_layer(layer.name))))
        elif layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    for layer in folded._flatten_layers(include_self=False):
        if hasattr(layer, "finalize_state"):  # state derived from weights (an adapted Normalization's mean)
            layer.finalize_state()

    probe = default_probe(source) if probe is None else np.asarray(probe, dtype=np.float32)
    if probe.shape[1:] != tuple(source.input_shape[1:]):
        raise ConfigError(f"the probe batch is {probe.shape}, where {source.name!r} takes "
                          f"(N, {', '.join(map(str, source.input_shape[1:]))})")
    reference = runnable_outputs(source, probe)
    if not np.all(np.isfinite(reference)):
        raise ModelError(f"{source.name!r} computes values that are not finite numbers (NaN or infinity) on the "
                         "probe images: check the weights")
    candidate = _outputs(folded, probe)
    report = FoldReport(
        folded=tuple(folds),
        skipped=tuple(skipped),
        params_before=source.count_params(),
        params_after=folded.count_params(),
        probe_max_abs_diff=float(np.abs(candidate - reference).max()),
        probe_output_scale=float(np.abs(reference).max()),
        probe_top1_agreement=_top1_agreement(reference, candidate),
        as_depthwise=tuple(as_depthwise),
    )
    if not report.probe_relative_diff <= FOLD_TOLERANCE and report.probe_output_scale:
        report = replace(report, probe_rounding_floor=rounding_floor(folded, probe, candidate))
    if not report.probe_relative_diff <= report.tolerance:
        floor = ("" if report.probe_rounding_floor is None else
                 f"; float32 rounding alone moves them {report.probe_rounding_floor:.2g} of it")
        raise ConversionError(
            f"folding BatchNorm changed {source.name!r}'s outputs on the probe images (max |diff| "
            f"{report.probe_max_abs_diff:.3g}, {report.probe_relative_diff:.2g} of the output scale{floor}): a layer "
            "did not survive the rebuild; convert it unfolded (quantize --no-fold)")
    if skipped:
        names = ", ".join(f"{bn} ({reason})" for bn, reason in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"{len(skipped)} BatchNormalization layers left unfolded: {names}{more}", FoldWarning, stacklevel=2)
    return folded, report


def _top1_agreement(reference, candidate):
    if reference.ndim != 2 or reference.shape[-1] < 2:
        return None
    return float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))
