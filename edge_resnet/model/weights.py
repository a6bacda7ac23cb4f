"""Loading weights into a built model: Keras 3 files, legacy Keras 2 HDF5
files (by layer name), and the published ImageNet files via the Keras cache."""

import os
import warnings
from pathlib import Path

import h5py
import keras

from ..errors import WeightsError

# The published keras.applications files and their MD5 (top, no top).
IMAGENET_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
IMAGENET_MD5 = {
    50: ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    101: ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    152: ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
}
WEIGHT_SUFFIXES = (".keras", ".weights.h5", ".h5", ".hdf5")


def imagenet_file_name(depth, include_top):
    suffix = "" if include_top else "_notop"
    return f"resnet{depth}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"


def keras_home():
    """The Keras folder as Keras finds it: $KERAS_HOME, else ~/.keras where
    the home folder is writable, else /tmp/.keras. Read at every call (Keras
    reads it once, at import, and keeps it private)."""
    if os.environ.get("KERAS_HOME"):
        return Path(os.environ["KERAS_HOME"]).expanduser()
    home = Path("~").expanduser()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def keras_cache_dirs():
    """Where a cached weights file may be: the Keras folder's models/, and
    the home folder's (a read-only home may still hold the file)."""
    return list(dict.fromkeys([keras_home() / "models", Path("~").expanduser() / ".keras" / "models"]))


def keras_cache_dir():
    return keras_cache_dirs()[0]


def imagenet_weights_path(depth, include_top):
    """The cached ImageNet file, downloaded first when missing and online."""
    if depth not in IMAGENET_MD5:
        raise WeightsError(
            f"ImageNet weights exist for ResNet-50/101/152 only. Received: depth={depth}"
        )
    file_name = imagenet_file_name(depth, include_top)
    cached = keras_cache_dir() / file_name
    for folder in keras_cache_dirs():
        if (folder / file_name).is_file():
            return folder / file_name
    try:
        return Path(
            keras.utils.get_file(
                file_name,
                IMAGENET_ORIGIN + file_name,
                cache_subdir="models",
                cache_dir=str(keras_home()),
                file_hash=IMAGENET_MD5[depth][0 if include_top else 1],
            )
        )
    except Exception as error:  # re-raised as one line: any download failure is the same fix
        raise WeightsError(
            f"ImageNet weights {file_name} are not in the Keras cache and could not be "
            f"downloaded ({type(error).__name__}). Put the file at {cached} and run again."
        ) from error


def is_legacy_h5(path):
    """Keras 2 HDF5 files list their layers in a `layer_names` attribute,
    at the root (weights only) or under `model_weights` (whole model)."""
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        return "layer_names" in group.attrs


def legacy_layer_names(path):
    """Names of the layers that carry weights in a legacy HDF5 file."""
    with h5py.File(path, "r") as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        return {
            _text(name)
            for name in group.attrs["layer_names"]
            if len(group[_text(name)].attrs.get("weight_names", ())) > 0
        }


def _text(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def weighted_layer_names(model, ignore=()):
    return {layer.name for layer in model.layers if layer.weights and layer.name not in ignore}


def check_legacy_layers_match(model, path, ignore=()):
    """Loading by name skips whatever does not match; refuse instead, so that a
    file for another architecture never loads halfway."""
    in_file = legacy_layer_names(path)
    in_model = weighted_layer_names(model, ignore)
    missing, unexpected = sorted(in_model - in_file), sorted(in_file - in_model)
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"{len(missing)} model layers not in the file (first: {missing[0]})")
        if unexpected:
            details.append(
                f"{len(unexpected)} file layers not in the model (first: {unexpected[0]})"
            )
        raise WeightsError(
            f"{path} is for another architecture: {'; '.join(details)}. "
            "Build the model with the depth, shortcut, width, top and classes the file was saved with."
        )


def load_weights(model, weights, *, ignore=()):
    """Load `weights` ("imagenet" is resolved by the caller) into `model`.

    `ignore` names fixed layers (the in-model preprocessing) that a weights
    file need not contain.
    """
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}. Give a path to a {'/'.join(WEIGHT_SUFFIXES)} file.")
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise WeightsError(
            f"cannot tell the weights format of {path}: use a file ending in {', '.join(WEIGHT_SUFFIXES)}."
        )
    try:
        # Keras warns once per layer it cannot match before it raises; the
        # one-line error below says it all, so the warnings are replayed only
        # when the load succeeds.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if path.suffix in (".h5", ".hdf5") and is_legacy_h5(path):
                check_legacy_layers_match(model, path, ignore)
                model.load_weights(path, by_name=True)
            else:
                model.load_weights(path)
    except (ValueError, KeyError, OSError) as error:
        reason = _first_sentences(" ".join(str(error).split())) or type(error).__name__
        raise WeightsError(
            f"cannot load weights from {path} into {model.name}: {reason} "
            "Build the model with the depth, shortcut, width, top and classes the file was saved with."
        ) from error
    for caught_warning in caught:
        warnings.warn_explicit(caught_warning.message, caught_warning.category, caught_warning.filename,
                               caught_warning.lineno)


def _first_sentences(text, limit=300):
    """`text` cut to whole sentences within `limit` characters."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind(", "))
    return (cut[:end] if end > 0 else cut) + " ..."
