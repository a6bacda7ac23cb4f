"""The ResNet family: structure, keras.applications parity, options."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import edge_resnet
from edge_resnet.errors import ConfigError
from edge_resnet.model.resnet import build_resnet

KERAS_APPLICATIONS = {
    50: keras.applications.ResNet50,
    101: keras.applications.ResNet101,
    152: keras.applications.ResNet152,
}


def layer_signature(model):
    """(name, kind, weight shapes) of every layer but the input."""
    return [
        (layer.name, type(layer).__name__, [tuple(w.shape) for w in layer.weights])
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]


def small(depth=18, **options):
    options.setdefault("input_shape", (32, 32, 3))
    options.setdefault("classes", 10)
    options.setdefault("width", 0.25)
    return build_resnet(depth, **options)


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_layer_names_and_weight_shapes_match_keras_applications(depth):
    ours = build_resnet(depth)
    theirs = KERAS_APPLICATIONS[depth](weights=None)
    assert layer_signature(ours) == layer_signature(theirs)
    assert ours.count_params() == theirs.count_params()


def test_resnet50_parameter_counts():
    assert edge_resnet.resnet50().count_params() == 25_636_712
    assert edge_resnet.resnet50(include_top=False).count_params() == 23_587_712


@pytest.mark.slow
def test_weights_from_keras_applications_give_the_same_outputs():
    theirs = keras.applications.ResNet50(weights=None, classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in theirs.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2.0, var.shape),
            ])
    ours = edge_resnet.resnet50(classifier_activation=None, seed=123)
    for layer in ours.layers:
        if layer.weights:
            layer.set_weights(theirs.get_layer(layer.name).get_weights())
    images = edge_resnet.preprocess_input(rng.uniform(0, 255, (2, 224, 224, 3)))
    expected = np.asarray(theirs(images))
    actual = np.asarray(ours(images))
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("depth", [18, 34])
def test_basic_block_networks_follow_table_1(depth):
    model = build_resnet(depth)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    main_path_convs = [l for l in convs if "_0_" not in l.name]
    # conv1 + two 3x3 per block + the fc layer make up the paper's depth.
    assert len(main_path_convs) + 1 == depth
    assert {l.kernel_size for l in main_path_convs[1:]} == {(3, 3)}
    assert model.output_shape == (None, 1000)


def test_bottleneck_depth_counts_weighted_layers():
    model = build_resnet(101)
    main_path_convs = [
        l for l in model.layers if isinstance(l, keras.layers.Conv2D) and "_0_" not in l.name
    ]
    assert len(main_path_convs) + 1 == 101


def test_every_conv_is_followed_by_batchnorm_and_relu_comes_after_add():
    model = small(50)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            consumers = [node.operation for node in layer._outbound_nodes]
            assert [type(c) for c in consumers] == [keras.layers.BatchNormalization]
        if isinstance(layer, keras.layers.Add):
            consumers = [node.operation for node in layer._outbound_nodes]
            assert consumers[0].name.endswith("_out")


def test_downsampling_happens_in_the_first_block_of_conv3_to_conv5():
    model = build_resnet(50, input_shape=(224, 224, 3), include_top=False)
    shapes = {l.name: l.output.shape[1:3] for l in model.layers}
    assert shapes["conv2_block3_out"] == (56, 56)
    assert shapes["conv3_block1_out"] == (28, 28)
    assert shapes["conv4_block1_out"] == (14, 14)
    assert shapes["conv5_block1_out"] == (7, 7)


def test_plain_variant_has_no_add_layers():
    model = small(34, plain=True)
    assert not [l for l in model.layers if isinstance(l, keras.layers.Add)]
    assert not [l for l in model.layers if "_0_" in l.name]


@pytest.mark.parametrize("depth", [18, 50])
def test_shortcut_a_is_parameter_free(depth):
    with_a = small(depth, shortcut="A")
    plain = small(depth, plain=True)
    assert [l for l in with_a.layers if isinstance(l, keras.layers.Add)]
    shortcut_layers = [l for l in with_a.layers if "_0_" in l.name]
    assert shortcut_layers, "dimensions grow somewhere, so option A must pad somewhere"
    assert sum(l.count_params() for l in shortcut_layers) == 0
    assert with_a.count_params() == plain.count_params()


def test_shortcut_a_pads_with_zeros_and_subsamples():
    model = small(18, shortcut="A")
    pad = keras.Model(model.input, model.get_layer("conv3_block1_0_squeeze").output)
    block_input = keras.Model(model.input, model.get_layer("conv2_block2_out").output)
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 3)).astype("float32")
    padded, source = np.asarray(pad(x)), np.asarray(block_input(x))
    channels = source.shape[-1]
    np.testing.assert_array_equal(padded[..., :channels], source[:, ::2, ::2, :])
    assert not padded[..., channels:].any()


def test_shortcut_b_projects_only_where_dimensions_change():
    projected = {l.name for l in small(18).layers if l.name.endswith("_0_conv")}
    assert projected == {"conv3_block1_0_conv", "conv4_block1_0_conv", "conv5_block1_0_conv"}
    projected_50 = {l.name for l in small(50).layers if l.name.endswith("_0_conv")}
    assert projected_50 == {f"conv{s}_block1_0_conv" for s in range(2, 6)}


def test_shortcut_c_projects_on_every_block():
    model = small(18, shortcut="C")
    blocks = {l.name.rsplit("_", 1)[0] for l in model.layers if l.name.endswith("_out")}
    projected = {l.name[: -len("_0_conv")] for l in model.layers if l.name.endswith("_0_conv")}
    assert blocks == projected and len(blocks) == 8


def test_v1_and_v1_5_differ_exactly_where_the_stride_sits():
    v1 = {l["name"]: l["config"] for l in small(50, stride_at="v1").get_config()["layers"]}
    v15 = {l["name"]: l["config"] for l in small(50, stride_at="v1.5").get_config()["layers"]}
    assert v1.keys() == v15.keys()
    differing = {name for name in v1 if v1[name] != v15[name]}
    expected = {f"conv{s}_block1_{i}_conv" for s in (3, 4, 5) for i in (1, 2)}
    assert differing == expected
    for stage in (3, 4, 5):
        assert tuple(v1[f"conv{stage}_block1_1_conv"]["strides"]) == (2, 2)
        assert tuple(v15[f"conv{stage}_block1_2_conv"]["strides"]) == (2, 2)


def test_input_size_options_and_pooling():
    assert small(18, input_shape=(32, 32, 3)).output_shape == (None, 10)
    assert small(18, input_shape=(64, 48, 3), include_top=False).output_shape == (None, 2, 2, 128)
    assert small(18, include_top=False, pooling="max").output_shape == (None, 128)
    assert small(18, include_top=False, pooling="avg").output_shape == (None, 128)
    assert small(18, input_shape=(40, 40, 1)).output_shape == (None, 10)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"depth": 20}, "depth must be one of"),
        ({"input_shape": (31, 64, 3)}, "at least 32"),
        ({"input_shape": (64, 64)}, "input_shape must be"),
        ({"shortcut": "D"}, "shortcut must be one of"),
        ({"stride_at": "v2"}, "stride_at must be one of"),
        ({"pooling": "sum"}, "pooling must be one of"),
        ({"classes": 0}, "classes must be"),
        ({"width": 0}, "width must be a positive number"),
    ],
)
def test_bad_arguments_raise_config_error_naming_the_value(options, message):
    depth = options.pop("depth", 18)
    with pytest.raises(ConfigError, match=message):
        build_resnet(depth, **options)


def test_width_multiplier_scales_filters():
    full, quarter = build_resnet(18, width=1.0), build_resnet(18, width=0.25)
    assert full.get_layer("conv5_block2_2_conv").filters == 512
    assert quarter.get_layer("conv5_block2_2_conv").filters == 128
    assert quarter.count_params() < full.count_params() / 10


def test_same_seed_same_weights_other_seed_other_weights():
    first, again, other = small(seed=7), small(seed=7), small(seed=8)
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    kernel = "conv2_block1_1_conv"
    assert not np.array_equal(
        first.get_layer(kernel).get_weights()[0], other.get_layer(kernel).get_weights()[0]
    )
    # Same-shape layers within one model must not share an initialisation.
    assert not np.array_equal(
        first.get_layer("conv2_block1_2_conv").get_weights()[0],
        first.get_layer("conv2_block2_1_conv").get_weights()[0],
    )


def test_preprocessing_inside_the_model_matches_preprocess_input():
    rng = np.random.default_rng(3)
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    outside = small(50, classifier_activation=None)
    inside = small(50, classifier_activation=None, preprocessing=True)
    for layer in outside.layers:
        if layer.weights:
            inside.get_layer(layer.name).set_weights(layer.get_weights())
    expected = np.asarray(outside(edge_resnet.preprocess_input(pixels)))
    np.testing.assert_allclose(np.asarray(inside(pixels)), expected, rtol=1e-5, atol=1e-4)
    assert inside.get_layer("preprocess").trainable is False


def test_preprocess_input_is_caffe_mode():
    pixel = np.array([[[[10.0, 20.0, 30.0]]]])
    np.testing.assert_allclose(
        edge_resnet.preprocess_input(pixel)[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6
    )


def test_model_code_uses_no_tensorflow():
    source = (__import__("pathlib").Path(edge_resnet.__file__).parent / "model" / "resnet.py").read_text()
    assert "tensorflow" not in source and "tf." not in source


JAX_SCRIPT = """
import numpy as np, keras
assert keras.backend.backend() == "jax"
from edge_resnet.model.resnet import build_resnet
model = build_resnet(50, input_shape=(32, 32, 3), classes=10, width=0.25, shortcut="A")
out = np.asarray(model(np.ones((2, 32, 32, 3), "float32")))
assert out.shape == (2, 10) and np.isfinite(out).all()
print("ok", keras.backend.backend())
"""


def test_small_model_runs_under_jax_backend_when_available():
    pytest.importorskip("jax")
    env = dict(__import__("os").environ, KERAS_BACKEND="jax")
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok jax" in result.stdout
