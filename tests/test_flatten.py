"""A functional model nested in another is inlined layer by layer (the same function, every layer its own); one
that cannot be is returned as it is."""

import keras
import numpy as np

from edge_resnet.model.flatten import without_nested_models
from edge_resnet.model.fold import fold_batchnorm


def base(name="base"):
    """A keras.applications-like trunk: its own input layer, BatchNormalization inside, pooled output."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name=f"{name}_conv")(inputs)
    x = keras.layers.ReLU(name=f"{name}_relu")(keras.layers.BatchNormalization(name=f"{name}_bn")(x))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x), name=name)


def with_statistics(model):
    rng = np.random.default_rng(0)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.5, 8).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, 8).astype("float32"))
    return model


PROBE = np.random.default_rng(1).normal(0, 1, (3, 16, 16, 3)).astype("float32")


def test_a_base_called_on_the_inputs_with_a_new_head_is_inlined_and_then_folds():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    trunk = base()
    x = keras.layers.Dropout(0.2, name="drop")(trunk(inputs, training=False))
    model = with_statistics(keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(x)))
    flat = without_nested_models(model)
    assert not any(isinstance(layer, keras.Model) for layer in flat.layers)
    assert [layer.name for layer in flat.layers[1:]] == ["base_conv", "base_bn", "base_relu", "base_pool", "drop",
                                                          "head"]
    np.testing.assert_array_equal(flat.predict_on_batch(PROBE), model.predict_on_batch(PROBE))
    assert fold_batchnorm(flat)[1].folded == (("base_conv", "base_bn"),)


def test_a_sequential_holding_a_base_is_inlined():
    keras.utils.set_random_seed(0)
    model = with_statistics(keras.Sequential([keras.Input((16, 16, 3)), base(), keras.layers.Dense(4, name="head")]))
    flat = without_nested_models(model)
    assert [layer.name for layer in flat.layers][-2:] == ["base_pool", "head"]
    np.testing.assert_array_equal(flat.predict_on_batch(PROBE), model.predict_on_batch(PROBE))


def test_a_base_called_twice_or_sharing_a_layer_name_stays_nested():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    trunk = base()
    twice = keras.Model(inputs, keras.layers.Add()([trunk(inputs), trunk(keras.layers.Rescaling(0.5)(inputs))]))
    assert without_nested_models(twice) is twice
    clash = keras.Model(inputs, keras.layers.Dense(4, name="base_pool")(base()(inputs)))
    assert without_nested_models(clash) is clash


def test_a_nested_model_that_is_the_output_is_inlined():
    """A config numbers the nested model's node 1 in its output_layers and 0 where a layer reads it: a wrapper whose
    output is the nested model's (preprocessing before a keras.applications classifier) crashed the load."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    wrapped = with_statistics(keras.Model(inputs, base()(keras.layers.Rescaling(1 / 255, name="scale")(inputs))))
    flat = without_nested_models(wrapped)
    assert [layer.name for layer in flat.layers][-1] == "base_pool"
    np.testing.assert_array_equal(flat.predict_on_batch(PROBE), wrapped.predict_on_batch(PROBE))
    sequential = with_statistics(keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(0.5), base()]))
    assert [layer.name for layer in without_nested_models(sequential).layers][-1] == "base_pool"


def test_a_model_with_outputs_by_name_is_left_as_it_is():
    inputs = keras.Input((16, 16, 3))
    named = keras.Model(inputs, {"pooled": base()(inputs)})
    assert without_nested_models(named) is named
