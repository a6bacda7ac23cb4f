"""Per-stage size and cost of a Keras model: output shape, parameters and
multiply-accumulates, counted from the layers themselves."""

from dataclasses import dataclass
from math import prod

from keras import layers

HEAD_LAYERS = ("avg_pool", "max_pool", "predictions")
INPUT_LAYERS = ("input_layer", "preprocess")
STEM_PREFIXES = ("conv1", "pool1")


@dataclass(frozen=True)
class StageRow:
    stage: str
    output_shape: tuple
    params: int
    macs: int


def layer_macs(layer):
    """Multiply-accumulates of one forward pass of one sample."""
    if isinstance(layer, layers.DepthwiseConv2D):
        out_h, out_w, out_c = layer.output.shape[1:]
        k_h, k_w = layer.kernel_size
        return out_h * out_w * out_c * k_h * k_w
    if isinstance(layer, layers.Conv2D):
        out_h, out_w, out_c = layer.output.shape[1:]
        k_h, k_w = layer.kernel_size
        in_c = layer.input.shape[-1]
        return out_h * out_w * out_c * k_h * k_w * in_c // layer.groups
    if isinstance(layer, layers.Dense):
        positions = prod(layer.input.shape[1:-1])
        return positions * layer.input.shape[-1] * layer.units
    return 0


def stage_of(layer_name):
    """conv2_block1_1_conv -> conv2; conv1_* and pool1_* -> conv1 (the stem)."""
    if layer_name in INPUT_LAYERS:
        return "input"
    if layer_name in HEAD_LAYERS:
        return "head"
    prefix = layer_name.split("_", 1)[0]
    return "conv1" if prefix in STEM_PREFIXES else prefix


def stage_table(model):
    """One row per stage in model order; totals are sums over the rows."""
    order, params, macs, shapes = [], {}, {}, {}
    for layer in model.layers:
        stage = stage_of(layer.name)
        if stage not in params:
            order.append(stage)
            params[stage] = macs[stage] = 0
        params[stage] += layer.count_params()
        macs[stage] += layer_macs(layer)
        shapes[stage] = tuple(layer.output.shape[1:])
    return [StageRow(stage, shapes[stage], params[stage], macs[stage]) for stage in order]


def format_stage_table(model):
    rows = stage_table(model)
    header = f"{'stage':<8} {'output shape':<18} {'params':>14} {'MACs':>16}"
    lines = [f"{model.name}", header, "-" * len(header)]
    for row in rows:
        shape = "x".join(str(size) for size in row.output_shape)
        lines.append(f"{row.stage:<8} {shape:<18} {row.params:>14,} {row.macs:>16,}")
    total_params = sum(row.params for row in rows)
    total_macs = sum(row.macs for row in rows)
    lines.append("-" * len(header))
    lines.append(f"{'total':<8} {'':<18} {total_params:>14,} {total_macs:>16,}")
    lines.append(f"{total_macs / 1e9:.2f} G multiply-accumulates per image")
    return "\n".join(lines)
