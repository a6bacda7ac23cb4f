"""Weights: legacy Keras 2 HDF5 by name, Keras 3 files, the ImageNet cache,
and clear errors for files of another architecture."""

import h5py
import numpy as np
import pytest

from edge_resnet.errors import ConfigError, WeightsError
from edge_resnet.model.resnet import build_resnet
from edge_resnet.model.weights import imagenet_file_name


def small(depth=18, **options):
    options.setdefault("input_shape", (32, 32, 3))
    options.setdefault("classes", 10)
    options.setdefault("width", 0.25)
    return build_resnet(depth, **options)


def write_legacy_h5(model, path, seed=0):
    """Lay a model's weights out like the published Keras 2 files
    (resnet50_weights_tf_dim_ordering_tf_kernels.h5), in shuffled layer
    order so only loading by name can get them right."""
    names = [layer.name for layer in model.layers if layer.weights]
    np.random.default_rng(seed).shuffle(names)
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [name.encode() for name in names]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.2.4"
        for name in names:
            layer = model.get_layer(name)
            group = handle.create_group(name)
            weight_names = [f"{name}/{variable.name}:0" for variable in layer.weights]
            group.attrs["weight_names"] = [w.encode() for w in weight_names]
            for weight_name, value in zip(weight_names, layer.get_weights()):
                group.create_dataset(weight_name, data=value)


def assert_same_weights(model, other):
    for layer in model.layers:
        for mine, theirs in zip(layer.get_weights(), other.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(mine, theirs)


def test_legacy_hdf5_file_loads_by_name(tmp_path):
    source = small(50, seed=1)
    path = tmp_path / "legacy.h5"
    write_legacy_h5(source, path)
    loaded = small(50, seed=2, weights=str(path))
    assert_same_weights(source, loaded)


def test_keras_and_weights_h5_files_load(tmp_path):
    source = small(seed=1)
    source.save(tmp_path / "model.keras")
    source.save_weights(tmp_path / "model.weights.h5")
    assert_same_weights(source, small(seed=2, weights=tmp_path / "model.keras"))
    assert_same_weights(source, small(seed=3, weights=str(tmp_path / "model.weights.h5")))


def test_legacy_file_for_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet18.h5"
    write_legacy_h5(small(18), path)
    with pytest.raises(WeightsError, match="another architecture"):
        small(50, weights=str(path))
    # Same layers by name but one more shortcut: option C has projections B lacks.
    write_legacy_h5(small(18, shortcut="C"), path)
    with pytest.raises(WeightsError, match="file layers not in the model"):
        small(18, weights=str(path))


def test_legacy_file_with_other_class_count_is_refused(tmp_path):
    path = tmp_path / "ten.h5"
    write_legacy_h5(small(18, classes=10), path)
    with pytest.raises(WeightsError, match="predictions"):
        small(18, classes=7, weights=str(path))


def test_keras3_file_with_other_class_count_is_refused(tmp_path):
    small(18, classes=10).save_weights(tmp_path / "ten.weights.h5")
    with pytest.raises(WeightsError, match="cannot load weights"):
        small(18, classes=7, weights=tmp_path / "ten.weights.h5")


def test_missing_or_unknown_weights_files_are_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        small(weights=tmp_path / "nope.h5")
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"\0" * 16)
    with pytest.raises(WeightsError, match="cannot tell the weights format"):
        small(weights=odd)


def test_imagenet_weights_come_from_the_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    source = build_resnet(50, include_top=False, input_shape=(64, 64, 3), seed=5)
    (tmp_path / "models").mkdir()
    write_legacy_h5(source, tmp_path / "models" / imagenet_file_name(50, include_top=False))
    loaded = build_resnet(50, include_top=False, input_shape=(64, 64, 3), weights="imagenet")
    assert_same_weights(source, loaded)


def test_imagenet_weights_missing_offline_name_the_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    try:
        build_resnet(101, include_top=False, weights="imagenet")
    except WeightsError as error:
        message = str(error)
        assert imagenet_file_name(101, include_top=False) in message
        assert str(tmp_path / "models") in message
        assert "\n" not in message
    else:  # a machine with internet access downloaded and loaded the real file
        assert (tmp_path / "models" / imagenet_file_name(101, include_top=False)).is_file()


@pytest.mark.parametrize(
    "options", [{"stride_at": "v1.5"}, {"shortcut": "C"}, {"plain": True}, {"classes": 10}, {"width": 0.5}]
)
def test_imagenet_weights_need_the_keras_applications_layout(options):
    with pytest.raises(ConfigError, match="keras.applications layout"):
        build_resnet(50, input_shape=(64, 64, 3), weights="imagenet", **options)


def test_imagenet_weights_exist_only_for_50_101_152():
    with pytest.raises(WeightsError, match="ResNet-50/101/152"):
        build_resnet(18, weights="imagenet")


def default_keras_home_env(home):
    """A user's environment: HOME set, KERAS_HOME not (the tests' own setting gone)."""
    import os

    env = {key: value for key, value in os.environ.items() if key != "KERAS_HOME"}
    return dict(env, HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3")


def test_imagenet_weights_load_from_the_home_keras_cache_without_keras_home(tmp_path):
    import subprocess
    import sys

    home = tmp_path / "home"
    (home / ".keras" / "models").mkdir(parents=True)
    source = build_resnet(50, include_top=False, input_shape=(64, 64, 3), seed=5)
    write_legacy_h5(source, home / ".keras" / "models" / imagenet_file_name(50, include_top=False))
    script = ("import edge_resnet; m = edge_resnet.resnet50(weights='imagenet', include_top=False, "
              "input_shape=(64, 64, 3)); print(repr(float(m.get_layer('conv5_block3_3_conv').get_weights()[0].sum())))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=default_keras_home_env(home))
    assert result.returncode == 0, result.stderr
    expected = float(source.get_layer("conv5_block3_3_conv").get_weights()[0].sum())
    assert float(result.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-6)


def test_imagenet_weights_missing_without_keras_home_is_one_line_naming_the_home_cache(tmp_path):
    from tests.cli import COMMAND
    import subprocess

    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run([*COMMAND, "quantize", "resnet50", "--weights", "imagenet", "--quantize", "none",
                             "--output", str(tmp_path / "x.tflite")], capture_output=True, text=True,
                            env=default_keras_home_env(home))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert imagenet_file_name(50, include_top=True) in lines[0]
    assert str(home / ".keras" / "models") in lines[0]
    assert not (tmp_path / "x.tflite").exists()
