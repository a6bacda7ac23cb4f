"""Preprocessing presets against keras.applications.imagenet_utils, custom
mean/std/scale, the record written into recipes, and the command-line
options. No model is built or converted."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from edge_resnet.cli import build_parser, request_from
from edge_resnet.convert import ConvertConfig, data_sets
from edge_resnet.data.images import PREPROCESSING_MODES, RESIZE_RATIO, Preprocessing
from edge_resnet.errors import ConfigError, DataError
from edge_resnet.data.preprocess import TORCH_MEAN_RGB, TORCH_STD_RGB, preprocess_input
from tests.cli import run_in_process

SIZE = 16


def rgb_images(count=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_presets_match_keras_imagenet_utils(mode):
    from keras.applications import imagenet_utils

    images = rgb_images()
    expected = imagenet_utils.preprocess_input(images.copy(), mode=mode)
    by_image = np.stack([Preprocessing(SIZE, SIZE, mode)(image) for image in images])
    for result in (by_image, preprocess_input(images, mode=mode)):
        assert result.dtype == np.float32
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_caffe_stays_the_default_and_raw_passes_pixels_through():
    image = rgb_images(1)[0]
    assert Preprocessing(SIZE, SIZE) == Preprocessing(SIZE, SIZE, "caffe")
    assert Preprocessing(SIZE, SIZE).mode == "caffe"
    np.testing.assert_array_equal(Preprocessing(SIZE, SIZE)(image), preprocess_input(image))
    np.testing.assert_array_equal(Preprocessing(SIZE, SIZE, "raw")(image), image.astype(np.float32))


def test_custom_is_pixels_times_scale_minus_mean_over_std_in_rgb():
    image = rgb_images(1)[0]
    custom = Preprocessing(SIZE, SIZE, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5), scale=1 / 255)
    assert (custom.mode, custom.channel_order, custom.scale) == ("custom", "RGB", (1 / 255,) * 3)
    red, green, blue = image[3, 5].astype(np.float64)
    expected = [(red / 255 - 0.5) / 0.2, (green / 255 - 0.4) / 0.25, (blue / 255 - 0.3) / 0.5]
    np.testing.assert_allclose(custom(image)[3, 5], expected, rtol=1e-5)
    # one number stands for all three channels; what is left out is the identity
    np.testing.assert_allclose(Preprocessing(SIZE, SIZE, mean=127.5)(image), image - 127.5)


def test_torch_is_custom_with_the_imagenet_values():
    torch = Preprocessing(SIZE, SIZE, "torch")
    custom = Preprocessing(SIZE, SIZE, mean=TORCH_MEAN_RGB, std=TORCH_STD_RGB, scale=1 / 255)
    image = rgb_images(1)[0]
    np.testing.assert_array_equal(torch(image), custom(image))
    assert (torch.mean, torch.std) == (TORCH_MEAN_RGB, TORCH_STD_RGB)


@pytest.mark.parametrize(
    "preprocessing",
    [Preprocessing(32, 24, mode) for mode in PREPROCESSING_MODES if mode != "custom"]
    + [Preprocessing(32, 32, mean=(0.5, 0.4, 0.3), std=0.25, scale=(1 / 255, 1 / 255, 1 / 128))],
    ids=lambda preprocessing: preprocessing.mode,
)
def test_to_dict_records_everything_and_round_trips_through_json(preprocessing):
    record = json.loads(json.dumps(preprocessing.to_dict()))
    assert record == preprocessing.to_dict()
    assert set(record) == {"height", "width", "mode", "channel_order", "mean", "std", "scale", "resize_ratio"}
    assert Preprocessing.from_dict(record) == preprocessing


def test_caffe_records_its_mean_in_bgr_order():
    record = Preprocessing(SIZE, SIZE).to_dict()
    assert record["channel_order"] == "BGR"
    assert record["mean"] == [103.939, 116.779, 123.68]


def test_from_dict_reads_records_that_predate_mean_std_scale():
    old = {"height": 32, "width": 32, "mode": "raw", "resize_ratio": RESIZE_RATIO}
    assert Preprocessing.from_dict(old) == Preprocessing(32, 32, "raw")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mean": [0.5, 0.5, 0.5]}, "torch preprocessing has mean"),
        ({"channel_order": "BGR"}, "channel_order 'BGR'"),
        ({"resize_ratio": 1.0}, "resize_ratio 1.0"),
    ],
)
def test_from_dict_refuses_a_record_it_would_not_reproduce(change, message):
    record = {**Preprocessing(SIZE, SIZE, "torch").to_dict(), **change}
    with pytest.raises(DataError, match=message):
        Preprocessing.from_dict(record)
    with pytest.raises(DataError, match="lacks 'mode'"):
        Preprocessing.from_dict({"height": SIZE, "width": SIZE})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"std": (0.2, 0.0, 0.2)}, r"std must not contain 0 .*Received: \(0.2, 0.0, 0.2\)"),
        ({"scale": 0}, "scale must not contain 0 .*Received: 0"),
        ({"mean": (1, 2)}, r"mean takes a number or 3 numbers .*Received: \(1, 2\)"),
        ({"mean": [[1, 2, 3]]}, r"Received: \[\[1, 2, 3\]\]"),
        ({"std": "0.5"}, "std takes .*Received: '0.5'"),
        ({"scale": float("nan")}, "scale must be finite. Received: nan"),
        ({"mean": (1.0, float("inf"), 1.0)}, r"mean must be finite. Received: \(1.0, inf, 1.0\)"),
        ({"mode": "tf", "std": 0.5}, r"tf preprocessing has std \(1.0, 1.0, 1.0\).*std 0.5"),
        ({"mode": "custom"}, "custom preprocessing needs mean, std or scale"),
        ({"mode": "bgr"}, "preprocessing must be one of .*Received: 'bgr'"),
    ],
)
def test_bad_values_are_refused_naming_the_value(options, message):
    with pytest.raises(DataError, match=message):
        Preprocessing(SIZE, SIZE, **options)


COMMANDS = {
    "quantize": ["quantize", "m.keras", "--output", "m.tflite"],
    "compare": ["compare", "--reference", "m.keras", "m.tflite", "--data", "images/"],
    "convert": ["convert"],
    "bench": ["bench", "m.tflite", "--input", "photo.jpg"],  # without images to feed, bench refuses these options
}


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_offers_every_mode_and_parses_mean_std_scale(command):
    parser = build_parser()
    assert parser.parse_args(COMMANDS[command]).preprocessing is None  # Preprocessing makes it caffe
    for mode in PREPROCESSING_MODES:
        assert parser.parse_args([*COMMANDS[command], "--preprocessing", mode]).preprocessing == mode
    args = parser.parse_args([*COMMANDS[command], "--mean", "0.485,0.456,0.406", "--std", "0.25", "--scale=2"])
    if command == "convert":  # the demo model takes its own preprocessing only
        args.weights = "random"
    request = request_from(args.request_class, args)
    assert (request.mean, request.std, request.scale) == ((0.485, 0.456, 0.406), (0.25,) * 3, (2.0,) * 3)
    assert request.preprocessing_at(SIZE, SIZE).mode == "custom"


@pytest.mark.parametrize(
    "option, message",
    [
        (["--std", "1,0,1"], r"edge-resnet bench: error: argument --std: std must not contain 0"),
        (["--mean", "1,2"], r"argument --mean: mean takes a number or 3 numbers"),
        (["--scale", "nan"], r"argument --scale: scale must be finite"),
        (["--mean", "a,b,c"], r"argument --mean: give one number or three, comma-separated. Received: 'a,b,c'"),
    ],
)
def test_cli_refuses_bad_values_in_one_line_with_exit_2(option, message):
    result = run_in_process("bench", "missing.tflite", *option)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert re.search(message, result.stderr), result.stderr


def test_convert_refuses_other_preprocessing_for_the_demo_model():
    for options in ({"preprocessing": "torch"}, {"mean": (0.5, 0.5, 0.5)}, {"preprocessing": "custom", "std": 2.0}):
        with pytest.raises(ConfigError, match="leave out --preprocessing, --mean, --std and --scale"):
            ConvertConfig(**options)
    assert ConvertConfig(preprocessing="caffe").preprocessing == "caffe"


def test_convert_passes_mean_std_scale_to_its_data_sets():
    config = ConvertConfig(model="resnet18", weights="random", calibration_size=10, eval_size=2,
                           mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5), scale=(1 / 255,) * 3)
    calibration, evaluation, _ = data_sets(config, SimpleNamespace(input_shape=(None, SIZE, SIZE, 3)))
    expected = Preprocessing(SIZE, SIZE, mean=config.mean, std=config.std, scale=config.scale)
    assert calibration.preprocessing == evaluation.preprocessing == expected
    assert calibration.describe()["preprocessing"]["mode"] == "custom"
