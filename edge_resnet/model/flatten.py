"""A functional model nested in another (the transfer-learning pattern:
`keras.applications.ResNet50(include_top=False)` called on the inputs of a
model with a new head) inlined into it, layer by layer.

A nested model is one layer to everything downstream: the BatchNorm fold
cannot reach its layers, and the int8 ONNX cannot tell its tensors apart.
Inlined, the model computes the same function (checked on a probe batch)
with every layer its own. A model this cannot inline (a nested Sequential,
a nested model called twice, a layer name used both inside and outside)
is returned as it is, and what follows says what it cannot do with it.
"""

import copy

import numpy as np

FUNCTIONAL = ("Functional", "Model")
# inlining is exact (the same layers, the same order of operations): a difference this large is a wrong graph
INLINE_TOLERANCE = 1e-5


def _triples(references):
    """[name, node, tensor] references, from one triple or a list of them."""
    return [references] if references and isinstance(references[0], str) else list(references)


def _inlinable(layer_config):
    return (layer_config["class_name"] in FUNCTIONAL and "layers" in layer_config["config"]
            and len(layer_config["inbound_nodes"]) == 1)


def _call_inputs(node):
    """The [name, node, tensor] references a call node passes as its inputs, in order."""
    args = node["args"]
    values = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
    return [value["config"]["keras_history"] for value in values
            if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"]


def _target(history, targets):
    """The reference `history` ([name, node, tensor]) points at once inlined: `targets` is keyed by (name, tensor)
    alone, as a config numbers a nested model's node 0 where a layer reads it and 1 in `output_layers`."""
    return list(targets.get((history[0], history[2]), history))


def _redirect(value, targets):
    """Point, in place, every tensor reference of serialized nodes found in `targets` at its target."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            value["config"]["keras_history"] = _target(value["config"]["keras_history"], targets)
        else:
            for item in value.values():
                _redirect(item, targets)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _redirect(item, targets)


def inlined_config(config):
    """`config` (a functional model's) with every nested functional model's layers in its place; None where one
    cannot be inlined."""
    config = copy.deepcopy(config)
    if isinstance(config["input_layers"], dict) or isinstance(config["output_layers"], dict):
        return None  # inputs or outputs by name: not a graph this inlines
    layers, targets = [], {}
    for layer_config in config["layers"]:
        if layer_config["class_name"] not in FUNCTIONAL:
            layers.append(layer_config)
            continue
        if not _inlinable(layer_config):
            return None
        inner = inlined_config(layer_config["config"])
        if inner is None:
            return None
        inner_inputs = _triples(inner["input_layers"])
        outer_inputs = _call_inputs(layer_config["inbound_nodes"][0])
        if len(inner_inputs) != len(outer_inputs):
            return None
        feeds = {(inner_input[0], inner_input[2]): _target(outer_input, targets)
                 for inner_input, outer_input in zip(inner_inputs, outer_inputs)}
        _redirect(inner["layers"], feeds)
        fed = {name for name, _, _ in inner_inputs}
        layers += [inner_layer for inner_layer in inner["layers"] if inner_layer["name"] not in fed]
        targets.update({(layer_config["name"], index): list(output)
                        for index, output in enumerate(_triples(inner["output_layers"]))})
    names = [layer_config["name"] for layer_config in layers]
    if len(set(names)) != len(names):
        return None
    for layer_config in layers:
        _redirect(layer_config["inbound_nodes"], targets)
    outputs = [_target(output, targets) for output in _triples(config["output_layers"])]
    config["layers"] = layers
    config["output_layers"] = outputs if len(outputs) > 1 or not isinstance(config["output_layers"][0], str) \
        else outputs[0]
    return config


def _by_name(model):
    """{layer name: layer} of `model`'s layers and of the layers of every functional model nested in it (those
    inlined_config inlines)."""
    import keras

    found = {}
    for layer in model.layers:
        found[layer.name] = layer
        if isinstance(layer, keras.Model) and not isinstance(layer, keras.Sequential):
            found.update(_by_name(layer))
    return found


def without_nested_models(model, probe=None):
    """`model` with every functional model nested in it inlined (the same weights, checked to compute the same on
    `probe`, a batch of its inputs; default seeded normal values), or `model` itself when it nests none or one
    cannot be inlined."""
    import keras

    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model
    functional = keras.Model(model.inputs, model.outputs, name=model.name) if isinstance(model, keras.Sequential) \
        else model
    if probe is None:
        probe = np.random.default_rng(0).normal(0.0, 1.0, (2, *model.input_shape[1:])).astype(np.float32)
    try:  # whatever fails here (Keras's own errors, a layer this CPU cannot run) leaves the model as it was
        config = inlined_config(functional.get_config())
        if config is None:
            return model
        flat = keras.Model.from_config(config)
        source = _by_name(functional)
        for layer in flat.layers:
            if layer.weights:
                layer.set_weights(source[layer.name].get_weights())
        expected = np.asarray(model.predict_on_batch(probe), np.float64)
        actual = np.asarray(flat.predict_on_batch(probe), np.float64)
    except Exception:  # noqa: BLE001
        return model
    scale = max(float(np.abs(expected).max()), 1e-12)
    if actual.shape != expected.shape or not np.all(np.isfinite(actual)) or \
            not np.abs(actual - expected).max() <= INLINE_TOLERANCE * scale:
        return model
    return flat
