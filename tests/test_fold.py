"""BatchNorm folding: exact on our ResNets and on a model we did not build,
honest about what it cannot fold."""

import keras
import numpy as np
import pytest

import edge_resnet
from edge_resnet.model.fold import FoldWarning, fold_batchnorm
from edge_resnet.model.resnet import build_resnet
from tests.digits import digit_pixels

BN = keras.layers.BatchNormalization


def randomize_batchnorm(model, seed=0):
    """Non-trivial gamma, beta, moving mean and variance, so that a wrong
    folding formula changes the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, BN):
            shape = layer.moving_mean.shape
            values = {
                "gamma": rng.uniform(0.2, 0.6, shape),
                "beta": rng.normal(0.0, 0.05, shape),
                "moving_mean": rng.normal(0.0, 0.1, shape),
                "moving_variance": rng.uniform(0.5, 2.0, shape),
            }
            for variable in layer.weights:
                variable.assign(values[variable.name].astype("float32"))
    return model


def batchnorm_param_count(model):
    return sum(layer.count_params() for layer in model.layers if isinstance(layer, BN))


def images(size, count=8):
    pixels, _ = digit_pixels(size, count)
    return edge_resnet.preprocess_input(pixels)


def assert_same_predictions(original, folded, probe, rtol=1e-4):
    expected = np.asarray(original(probe, training=False))
    actual = np.asarray(folded(probe, training=False))
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= rtol * scale
    np.testing.assert_array_equal(actual.argmax(-1), expected.argmax(-1))


@pytest.mark.slow
def test_resnet50_folds_all_53_batchnorms():
    model = randomize_batchnorm(build_resnet(50, classifier_activation=None))
    probe = images(224, 4)
    folded, report = fold_batchnorm(model, probe=probe)
    assert len(report.folded) == 53 and report.skipped == ()
    assert not [layer for layer in folded.layers if isinstance(layer, BN)]
    # keras.applications' convolutions already carry a bias: no new ones.
    assert report.params_before - report.params_after == batchnorm_param_count(model)
    assert report.params_after == folded.count_params()
    assert_same_predictions(model, folded, probe)
    assert report.probe_relative_diff <= 1e-4 and report.probe_top1_agreement == 1.0
    # Names line up with keras.applications for per-layer reports.
    assert folded.get_layer("conv4_block6_3_conv").bias is not None
    assert {l.name for l in folded.layers} == {l.name for l in model.layers if not isinstance(l, BN)}


def test_resnet18_trained_on_digits_folds_exactly(digits_model):
    """The session's trained digits model: its BN statistics are the ones
    training produced."""
    model = digits_model
    moving_means = [np.abs(np.asarray(l.moving_mean)).max() for l in model.layers if isinstance(l, BN)]
    assert max(moving_means) > 0.01, "training should have moved the BN statistics"
    probe = images(32, 64)
    folded, report = fold_batchnorm(model, probe=probe)
    assert len(report.folded) == len([l for l in model.layers if isinstance(l, BN)]) and not report.skipped
    assert_same_predictions(model, folded, probe)


def test_shortcut_c_model_folds_exactly():
    model = randomize_batchnorm(build_resnet(34, input_shape=(64, 64, 3), classes=10, width=0.25, shortcut="C", classifier_activation=None))
    probe = images(64)
    folded, report = fold_batchnorm(model, probe=probe)
    projections = [l for l in model.layers if l.name.endswith("_0_bn")]
    assert len(projections) == 16 and not report.skipped
    assert len(report.folded) == len([l for l in model.layers if isinstance(l, BN)])
    assert_same_predictions(model, folded, probe)


def test_mobilenet_v2_with_depthwise_convolutions_folds_exactly():
    model = randomize_batchnorm(
        keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classifier_activation=None)
    )
    probe = images(96) / 127.5  # MobileNetV2 expects inputs in [-1, 1]
    folded, report = fold_batchnorm(model, probe=probe)
    folded_into = {type(model.get_layer(layer)).__name__ for layer, _ in report.folded}
    assert folded_into == {"Conv2D", "DepthwiseConv2D"}
    assert not report.skipped
    # MobileNetV2's convolutions have no bias: folding adds one per BN channel.
    new_biases = sum(model.get_layer(layer).output.shape[-1] for layer, _ in report.folded)
    assert report.params_before - report.params_after == batchnorm_param_count(model) - new_biases
    assert_same_predictions(model, folded, probe)


def handmade_model():
    """Every foldable variant and every unfoldable pattern in one model."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv_no_bias")(inputs)
    x = BN(center=False, epsilon=0.1, name="bn_no_center")(x)
    x = keras.layers.Conv2D(8, 3, name="conv_bias")(x)
    x = BN(scale=False, name="bn_no_scale")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(x)
    x = BN(axis=3, epsilon=1e-2, name="bn_after_depthwise")(x)
    branch = keras.layers.Conv2D(16, 1, name="conv_used_twice")(x)
    y = BN(name="bn_shared_input")(branch)
    x = keras.layers.Add(name="add")([y, branch])
    x = BN(name="bn_after_add")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="conv_relu")(x)
    x = BN(name="bn_after_relu")(x)
    x = keras.layers.Conv2D(16, 1, name="conv_training")(x)
    x = BN(name="bn_training")(x, training=True)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(12, name="dense")(x)
    x = BN(name="bn_after_dense")(x)
    return randomize_batchnorm(keras.Model(inputs, x), seed=4)


def test_batchnorm_with_no_convolution_to_fold_into_becomes_a_1x1_depthwise_convolution():
    """One after an addition, after an activation or reading a tensor something else reads computes x * s + t per
    channel: a 1x1 DepthwiseConv2D of its name does (one TFLite operator with a weight scale per channel, not a MUL
    and an ADD). One in training mode uses batch statistics and is left in place, reported."""
    model = handmade_model()
    probe = np.random.default_rng(0).normal(size=(6, 16, 16, 3)).astype("float32")
    with pytest.warns(FoldWarning, match="1 BatchNormalization layers left unfolded: bn_training"):
        folded, report = fold_batchnorm(model, probe=probe)
    assert dict(report.folded) == {
        "conv_no_bias": "bn_no_center",
        "conv_bias": "bn_no_scale",
        "depthwise": "bn_after_depthwise",
        "dense": "bn_after_dense",
    }
    replaced = dict(report.as_depthwise)
    assert "also feeds 'add'" in replaced["bn_shared_input"]
    assert "follows Add" in replaced["bn_after_add"]
    assert "applies relu" in replaced["bn_after_relu"]
    assert set(replaced) == {"bn_shared_input", "bn_after_add", "bn_after_relu"}
    assert all(isinstance(folded.get_layer(name), keras.layers.DepthwiseConv2D) for name in replaced)
    assert "training=True" in dict(report.skipped)["bn_training"] and len(report.skipped) == 1
    assert {layer.name for layer in folded.layers if isinstance(layer, BN)} == {"bn_training"}
    assert "made 3 a 1x1 depthwise convolution, left 1" in report.format()
    from edge_resnet.check.report import depthwise_text  # the convert report's BatchNorm line says it too

    assert depthwise_text(report.to_dict()["as_depthwise"]).startswith("made 3 a 1x1 depthwise convolution")
    # bn_training uses batch statistics, so compare everything before it.
    cut = lambda m: keras.Model(m.input, m.get_layer("conv_training").output)
    np.testing.assert_allclose(np.asarray(cut(folded)(probe)), np.asarray(cut(model)(probe)), rtol=1e-4, atol=1e-4)


def test_batchnorm_after_a_separable_convolution_folds_into_its_pointwise_half():
    """Xception: every SeparableConv2D (no bias) is followed by a BatchNormalization; it folds exactly (the pointwise
    kernel scaled, a bias added), no operator of its own."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.SeparableConv2D(8, 3, depth_multiplier=2, strides=2, padding="same", use_bias=False,
                                     name="sep")(inputs)
    x = keras.layers.ReLU(name="relu")(BN(name="sep_bn")(x))
    model = randomize_batchnorm(keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x)), seed=2)
    probe = np.random.default_rng(3).normal(size=(4, 16, 16, 3)).astype("float32")
    folded, report = fold_batchnorm(model, probe=probe)
    assert report.folded == (("sep", "sep_bn"),) and not report.as_depthwise and not report.skipped
    assert folded.get_layer("sep").use_bias
    np.testing.assert_allclose(np.asarray(folded(probe)), np.asarray(model(probe)), rtol=1e-4, atol=1e-5)


def test_batchnorm_of_a_flat_tensor_with_nothing_to_fold_into_is_left_in_place():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    model = randomize_batchnorm(keras.Model(inputs, keras.layers.Dense(3, name="dense")(BN(name="bn_flat")(x))))
    with pytest.warns(FoldWarning, match="1 BatchNormalization layers left unfolded"):
        folded, report = fold_batchnorm(model)
    assert "not the channels of an image" in dict(report.skipped)["bn_flat"] and not report.as_depthwise
    assert isinstance(folded.get_layer("bn_flat"), BN)


def test_original_model_is_not_modified():
    model = randomize_batchnorm(build_resnet(18, input_shape=(32, 32, 3), classes=10, width=0.25))
    before = [w.copy() for w in model.get_weights()]
    layer_names = [layer.name for layer in model.layers]
    fold_batchnorm(model)
    assert [layer.name for layer in model.layers] == layer_names
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_folded_model_saves_and_loads_without_custom_objects(tmp_path):
    model = randomize_batchnorm(build_resnet(18, input_shape=(32, 32, 3), classes=10, width=0.25, shortcut="A"))
    folded, _ = fold_batchnorm(model)
    folded.save(tmp_path / "folded.keras")
    loaded = keras.saving.load_model(tmp_path / "folded.keras")
    probe = images(32)
    np.testing.assert_array_equal(np.asarray(loaded(probe)), np.asarray(folded(probe)))


def test_sequential_models_fold_and_subclassed_models_are_refused():
    sequential = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c"), BN(name="b"), keras.layers.Flatten()]
    )
    randomize_batchnorm(sequential)
    folded, report = fold_batchnorm(sequential)
    assert report.folded == (("c", "b"),)
    probe = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(folded(probe)), np.asarray(sequential(probe)), rtol=1e-5, atol=1e-5)

    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(edge_resnet.ConfigError, match="functional or Sequential"):
        fold_batchnorm(Custom())


def small_model_reading_an_adapted_normalization():
    pixels = np.random.default_rng(1).uniform(0, 255, (32, 8, 8, 3)).astype("float32")
    normalization = keras.layers.Normalization()
    normalization.adapt(pixels)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=False)(normalization(inputs))
    x = keras.layers.BatchNormalization(moving_variance_initializer="ones", moving_mean_initializer="ones")(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x)))
    return keras.Model(inputs, outputs), pixels


def test_an_adapted_normalization_keeps_its_statistics_through_the_fold():
    model, pixels = small_model_reading_an_adapted_normalization()
    folded, report = fold_batchnorm(model, probe=pixels[:8])
    assert len(report.folded) == 1
    np.testing.assert_allclose(folded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), rtol=1e-4,
                               atol=1e-4 * np.abs(model.predict(pixels, verbose=0)).max())


def test_a_fold_that_changes_the_outputs_is_refused(monkeypatch):
    from edge_resnet.errors import ConversionError

    import edge_resnet.model.fold as fold

    model, pixels = small_model_reading_an_adapted_normalization()
    exact = fold.folded_weights
    monkeypatch.setattr(fold, "folded_weights", lambda layer, bn: (exact(layer, bn)[0] * 1.01, exact(layer, bn)[1]))
    with pytest.raises(ConversionError, match=r"folding BatchNorm changed .* \(quantize --no-fold\)"):
        fold_batchnorm(model, probe=pixels[:8])


def test_a_model_computing_nan_is_blamed_on_its_weights_not_on_the_fold():
    from edge_resnet.errors import ModelError

    model, pixels = small_model_reading_an_adapted_normalization()
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    kernel = conv.get_weights()[0]
    kernel[0, 0, 0, 0] = np.nan
    conv.set_weights([kernel])
    with pytest.raises(ModelError, match="not finite numbers .* on the probe images: check the weights"):
        fold_batchnorm(model, probe=pixels[:8])


def test_a_merge_of_three_branches_folds():
    """A three-input Add's serialized inputs are a list of three tensors, which the rewiring once took for one
    [layer, node, tensor] reference (TypeError: unhashable type: 'dict')."""
    inputs = keras.Input((16, 16, 3))
    branches = [BN(name=f"bn_{index}")(keras.layers.Conv2D(4, 3, padding="same")(inputs)) for index in range(3)]
    model = randomize_batchnorm(keras.Model(inputs, keras.layers.Flatten()(keras.layers.Add()(branches))))
    probe = images(16)
    folded, report = fold_batchnorm(model, probe=probe)
    assert len(report.folded) == 3 and not any(isinstance(layer, BN) for layer in folded.layers)
    assert_same_predictions(model, folded, probe)


def cancelling_model(relative_gap=1e-5):
    """Two convolutions of one image, the first followed by a BatchNormalization, the second its fold but for
    `relative_gap` of its weights, subtracted: outputs a small fraction of the values they are made from, so float32
    rounding alone (the fold's, or any) moves them far more than FOLD_TOLERANCE of their scale, as it moves a deep
    untrained network's (an untrained keras.applications ResNet152 at 32x32)."""
    inputs = keras.Input((8, 8, 3))
    large = keras.layers.Conv2D(16, 3, name="large")(inputs)
    shifted = BN(name="large_bn")(large)
    twin = keras.layers.Conv2D(16, 3, name="twin")(inputs)
    model = keras.Model(inputs, keras.layers.Flatten()(keras.layers.Subtract()([shifted, twin])))
    rng = np.random.default_rng(4)
    kernel, bias = rng.normal(0, 10, (3, 3, 3, 16)), rng.normal(0, 1, 16)
    gamma, beta, mean, variance = rng.uniform(1, 3, 16), rng.normal(0, 1, 16), rng.normal(0, 1, 16), rng.uniform(1, 4, 16)
    model.get_layer("large").set_weights([kernel.astype("float32"), bias.astype("float32")])
    model.get_layer("large_bn").set_weights([array.astype("float32") for array in (gamma, beta, mean, variance)])
    scale = gamma / np.sqrt(variance + model.get_layer("large_bn").epsilon)
    model.get_layer("twin").set_weights([(kernel * scale * (1 + relative_gap * rng.normal(size=kernel.shape)))
                                         .astype("float32"), ((bias - mean) * scale + beta).astype("float32")])
    return model


def test_a_network_float32_rounding_moves_far_folds_within_its_own_rounding_floor():
    """Folding rounds each product of a weight and its BatchNormalization's scale once: where that alone moves
    the outputs past FOLD_TOLERANCE, the fold is judged against what moving every weight by one float32 step does
    to them (an untrained ResNet152 was refused here, 4.3e-3 of its output scale against 1e-3)."""
    from edge_resnet.model.fold import FOLD_TOLERANCE

    model = cancelling_model()
    probe = np.random.default_rng(5).normal(size=(4, 8, 8, 3)).astype("float32")
    folded, report = fold_batchnorm(model, probe=probe)
    assert report.folded == (("large", "large_bn"),)
    assert report.probe_relative_diff > FOLD_TOLERANCE and report.probe_rounding_floor is not None
    assert report.probe_relative_diff <= report.tolerance
    assert "float32 rounding alone moves them" in report.format()


def test_a_fold_that_changes_the_function_is_refused_whatever_the_rounding_floor(monkeypatch):
    """A rebuild that dropped a BatchNormalization's scale moves the outputs by many times their scale, far past
    what rounding does: refused in one line, naming both."""
    from edge_resnet.errors import ConversionError
    from edge_resnet.model import fold

    monkeypatch.setattr(fold, "folded_weights", lambda layer, bn: layer.get_weights())
    probe = np.random.default_rng(5).normal(size=(4, 8, 8, 3)).astype("float32")
    with pytest.raises(ConversionError, match="did not survive the rebuild") as refused:
        fold_batchnorm(cancelling_model(), probe=probe)
    assert "float32 rounding alone moves them" in str(refused.value)
