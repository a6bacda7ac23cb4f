"""Image data for calibration and evaluation: folders of image files,
.npy/.npz arrays, or Python iterables, preprocessed the way the model
expects. Numpy and Pillow only.

A set is lazy (image files are decoded when iterated, never all held in
memory) and can be iterated any number of times with the same result.
"""

import dataclasses
import functools
import hashlib
import numbers
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..options import option
from .preprocess import PRESETS, normalize

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
RESIZE_RATIO = 256 / 224  # shorter side 256 for a 224 crop, as for ImageNet ResNets
DEFAULT_CALIBRATION_SIZE = 200  # TFLite's guidance: ~100-500 representative samples
FEW_SAMPLES = 10
CUSTOM = "custom"  # RGB with a mean, std and scale of your own
PREPROCESSING_MODES = (*PRESETS, CUSTOM)
NORMALIZATION_FIELDS = ("mean", "std", "scale")
CUSTOM_DEFAULTS = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": (1.0, 1.0, 1.0)}
NONZERO_REASONS = {"std": "it divides", "scale": "every image would become the same"}
PIXEL_SLACK = 0.5  # raw float pixels may stray this far and still round into 0..255


class DataWarning(UserWarning):
    """Skipped images, or a calibration set too small to trust."""


@dataclass(frozen=True)
class Preprocessing:
    """How raw RGB pixels become model input: resize the shorter side to
    RESIZE_RATIO x the crop, centre-crop to (height, width), then one of
    PREPROCESSING_MODES:

    - "caffe" (default): BGR, ImageNet mean subtracted (keras.applications ResNets)
    - "tf": RGB scaled to -1..1
    - "torch": RGB scaled to 0..1, then ImageNet mean and std
    - "raw": RGB 0..255 floats, for models with the preprocessing inside
    - "custom": RGB, (pixels * scale - mean) / std

    `mode` left out means "custom" when mean, std or scale is given, else
    "caffe". mean, std and scale are a number or one per channel; after
    construction they hold the mode's values, three floats each in
    `channel_order`, so the instance says exactly what it computes.
    """

    height: int
    width: int
    mode: str = None
    mean: tuple = None
    std: tuple = None
    scale: tuple = None

    def __post_init__(self):
        given = {name: channel_values(name, getattr(self, name)) for name in NORMALIZATION_FIELDS
                 if getattr(self, name) is not None}
        mode = self.mode if self.mode is not None else (CUSTOM if given else "caffe")
        if mode not in PREPROCESSING_MODES:
            raise DataError(f"preprocessing must be one of {PREPROCESSING_MODES}. Received: {mode!r}")
        if mode == CUSTOM and not given:
            raise DataError("custom preprocessing needs mean, std or scale (raw takes 0..255 RGB as is)")
        values = {**CUSTOM_DEFAULTS, **given} if mode == CUSTOM else preset_values(mode)
        for name, value in given.items():
            if value != values[name]:
                raise DataError(
                    f"{mode} preprocessing has {name} {values[name]}; leave out the mode (or give custom) "
                    f"to use {name} {getattr(self, name)!r}"
                )
        object.__setattr__(self, "mode", mode)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def shape(self):
        return (self.height, self.width, 3)

    @property
    def channel_order(self):
        """Of the model input (and of mean, std and scale)."""
        return PRESETS[self.mode]["channel_order"] if self.mode in PRESETS else "RGB"

    def __call__(self, rgb):
        """uint8 (or 0..255 float) RGB image of any size -> float32 model input."""
        pixels = np.asarray(rgb)
        if pixels.shape[:2] != (self.height, self.width):
            pixels = resize_and_centre_crop(pixels, self.height, self.width)
        return normalize(pixels, self.scale, self.mean, self.std, self.channel_order)

    def to_dict(self):
        """Everything needed to reproduce the model input (see from_dict)."""
        return {
            "height": self.height,
            "width": self.width,
            "mode": self.mode,
            "channel_order": self.channel_order,
            **{name: list(getattr(self, name)) for name in NORMALIZATION_FIELDS},
            "resize_ratio": RESIZE_RATIO,
        }

    @classmethod
    def from_dict(cls, record):
        """The Preprocessing a to_dict() record describes (records that
        predate mean/std/scale give their mode's values). Refuses a record
        that this version would not reproduce."""
        try:
            built = cls(record["height"], record["width"], record["mode"],
                        **{name: record.get(name) for name in NORMALIZATION_FIELDS})
        except KeyError as missing:
            raise DataError(f"preprocessing record lacks {missing}: {record!r}") from None
        for key in ("channel_order", "resize_ratio"):
            if key in record and record[key] != built.to_dict()[key]:
                raise DataError(
                    f"preprocessing record has {key} {record[key]!r}; this version of edge-resnet uses "
                    f"{built.to_dict()[key]!r} for {built.mode}"
                )
        return built


def channel_values(name, value):
    """A number, or 1 or 3 numbers (one per channel) -> three floats.
    DataError naming the value when it cannot be a mean, std or scale."""
    plain = value.tolist() if isinstance(value, np.ndarray) else value
    given = tuple(plain) if isinstance(plain, (list, tuple)) else (plain,)
    if len(given) not in (1, 3) or not all(_is_real(number) for number in given):
        raise DataError(f"{name} takes a number or 3 numbers (one per channel). Received: {value!r}")
    floats = tuple(float(number) for number in given) * (3 // len(given))
    if not all(np.isfinite(floats)):
        raise DataError(f"{name} must be finite. Received: {value!r}")
    if name in NONZERO_REASONS and 0 in floats:
        raise DataError(f"{name} must not contain 0 ({NONZERO_REASONS[name]}). Received: {value!r}")
    return floats


def parse_channel_values(name, text):
    """ "R,G,B" or one number, as typed on a command line -> three floats."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise DataError(f"give one number or three, comma-separated. Received: {text!r}") from None
    return channel_values(name, values[0] if len(values) == 1 else values)


def _is_real(number):
    return isinstance(number, numbers.Real) and not isinstance(number, bool)


def preset_values(mode):
    """A preset's scale, mean and std as three floats each."""
    return {name: channel_values(name, PRESETS[mode][name]) for name in NORMALIZATION_FIELDS}


def resize_and_centre_crop(rgb, height, width):
    from PIL import Image

    image = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb)
    scale = max(height * RESIZE_RATIO / image.height, width * RESIZE_RATIO / image.width)
    resized = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))), Image.BILINEAR
    )
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return np.asarray(resized.crop((left, top, left + width, top + height)))


def read_rgb(path):
    """Decode an image file to uint8 RGB. Grayscale, palette, RGBA, CMYK and
    16-bit images are converted; raises OSError/ValueError if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return _as_rgb(image)
    except Image.DecompressionBombError as error:
        raise DataError(
            f"image {path} is too large to decode safely ({error}); downscale it or leave it out"
        ) from None


def _as_rgb(image):
    """A decoded Pillow image as uint8 RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: Pillow's own conversion would clip at 255.
        wide = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "P":
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def _is_readable(path):
    try:
        read_rgb(path)
    except (OSError, ValueError, SyntaxError):  # Pillow's decoding failures
        return False
    return True


def scan_image_folder(root):
    """(sorted image paths, class name per path or None). A folder whose
    images all sit in sub-folders has one class per first-level sub-folder."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() in IMAGE_SUFFIXES:
        return [root], [None]
    if root.is_file():
        raise DataError(f"{root} is not an image ({', '.join(IMAGE_SUFFIXES)}), an image folder, .npy or .npz")
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    paths = sorted(image_files_under(root))
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    relative = [p.relative_to(root).parts for p in paths]
    folders = {parts[0] for parts in relative if len(parts) > 1}
    if all(len(parts) > 1 for parts in relative) and len(folders) > 1:
        return paths, [parts[0] for parts in relative]
    if len(folders) > 1:  # class folders, but images beside them: labels would be a guess
        loose = [path.name for path, parts in zip(paths, relative) if len(parts) == 1]
        warnings.warn(f"{root} has {len(folders)} sub-folders but also {len(loose)} image(s) of its own "
                      f"({', '.join(loose[:3])}{' ...' if len(loose) > 3 else ''}), so it is read unlabelled "
                      "(no class folders): move those images into a class folder for labels", DataWarning,
                      stacklevel=3)
    return paths, [None] * len(paths)


def image_files_under(root):
    """The image files under `root`, through symbolic links to folders as if the folders were there (a data
    set split with links) but never round a loop, and not in hidden files or folders (.ipynb_checkpoints,
    macOS's ._ files). Links to images that are not there are named in a warning."""
    real_of, dangling = {}, []  # folder walked -> its real path; image links to nothing
    for folder, subfolders, files in os.walk(root, followlinks=True):
        here, real = Path(folder), os.path.realpath(folder)
        if real in {real_of[above] for above in here.parents if above in real_of}:  # a link to a folder it is in
            subfolders[:] = []
            continue
        real_of[here] = real
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in files:
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_file():
                yield path
            elif path.is_symlink():
                dangling.append(path.name)
    if dangling:
        warnings.warn(f"skipped {len(dangling)} image links under {root} that point to no file "
                      f"({', '.join(dangling[:3])}{' ...' if len(dangling) > 3 else ''})", DataWarning, stacklevel=4)


def stratified_order(strata, seed):
    """Indices in a seeded order that takes one item from each stratum in
    turn, so any prefix is balanced across classes."""
    rng = np.random.default_rng(seed)
    groups = {}
    for index, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(index)
    queues = [list(rng.permutation(groups[key])) for key in sorted(groups, key=str)]
    order = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(int(queue.pop(0)))
    return order


@dataclass(frozen=True)
class ImageSet:
    """A lazy, re-iterable set of preprocessed samples.

    `items` are image paths (decoded on each iteration) or indices into
    `array`. `labels` holds one class per item, or None.
    """

    items: tuple
    preprocessing: Preprocessing
    fingerprint: str
    source: str
    labels: tuple = None
    array: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)
    preprocessed: bool = False
    seed: int = 0  # of the subset selection
    batch_size: int = 1
    # every sample preprocessed once and held in memory, in item order (see cached())
    decoded: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)
    root: str = None  # the folder that image paths are relative to (folder sets only)
    # every class folder of the source, sorted, or the class names in model-output order (--labels): a
    # sample of fewer images than classes holds only some of them
    classes: tuple = None

    def __len__(self):
        return len(self.items)

    def sample(self, item):
        if self.array is None:
            try:
                return self.preprocessing(read_rgb(item))
            except (OSError, ValueError, SyntaxError) as error:
                raise DataError(f"cannot read image {item}: {error}; remove or replace the file") from error
        value = self.array[item]
        return np.asarray(value, dtype=np.float32) if self.preprocessed else self.preprocessing(_to_rgb(value))

    def samples(self):
        if self.decoded is not None:
            yield from self.decoded
            return
        for item in self.items:
            yield self.sample(item)

    def cached(self):
        """The same set with every sample decoded and preprocessed once and
        held in memory, for the stages that each read it (calibration sets
        are a few hundred images)."""
        if self.decoded is not None:
            return self
        return dataclasses.replace(self, decoded=np.stack(list(self.samples())))

    def identities(self):
        return set(self.item_identities())

    def item_identities(self):
        """What names each item across sets of one source, in item order: a
        resolved file path, or the index into the source's array."""
        if self.array is None:
            return [str(Path(item).resolve()) for item in self.items]
        return [f"{self.source}[{item}]" for item in self.items]

    def sample_ids(self):
        """Each item's id within its source: the image's path relative to the
        folder (with / separators), or the index into the array."""
        if self.array is None:
            return [Path(item).relative_to(self.root).as_posix() for item in self.items]
        return [int(item) for item in self.items]

    def __iter__(self):
        batch = []
        for sample in self.samples():
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def with_batch_size(self, batch_size):
        return dataclasses.replace(self, batch_size=batch_size)

    def describe(self):
        return {
            "source": self.source,
            "size": len(self),
            "fingerprint": self.fingerprint,
            "preprocessing": self.preprocessing.to_dict(),
            "preprocessed_input": self.preprocessed,
            "seed": self.seed,
        }


def _to_rgb(image):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image


def images_from_folder(root, preprocessing, size=DEFAULT_CALIBRATION_SIZE, seed=0, check_readable=True):
    """`size` images (None: all) from a folder, seeded and stratified by
    class sub-folder. Unreadable files are skipped and named in a warning."""
    paths, classes = scan_image_folder(root)
    order = stratified_order(classes, seed)
    chosen, unreadable = [], []
    for index in order:
        if size is not None and len(chosen) == size:
            break
        if check_readable and not _is_readable(paths[index]):
            unreadable.append(paths[index])
        else:
            chosen.append(index)
    if not chosen:
        raise DataError(f"none of the images under {root} could be read ({len(unreadable)} tried); check the files")
    if unreadable:
        names = ", ".join(str(p) for p in unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        warnings.warn(f"skipped {len(unreadable)} unreadable images: {names}", DataWarning, stacklevel=2)
    return _folder_set(root, paths, classes, chosen, preprocessing, seed)


def check_image_headers(images, what):
    """Refuse, before the work, an image of `images` (an ImageSet) that cannot even be opened: an evaluation
    image is never skipped (golden outputs and parity rows name each one), and decoding every one up front
    costs what running them does. A file that opens but fails to decode still stops the run when it is read."""
    if images.array is not None:
        return
    from PIL import Image

    for path in images.items:
        try:
            with Image.open(path):
                pass
        except Image.DecompressionBombError as error:
            raise DataError(f"{what} image {path} is too large to decode safely ({error}); downscale it or leave "
                            "it out") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise DataError(f"cannot read {what} image {path}: {' '.join(str(error).split())}; remove or replace "
                            "the file") from error


def fingerprint(items, array=None):
    """SHA-256 over the content of the chosen items, in order: image files'
    bytes, or the rows of `array` they index."""
    if array is None:
        digest = hashlib.sha256()
        for path in items:
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
        return digest.hexdigest()
    digest = hashlib.sha256(str(array.shape[1:]).encode() + str(array.dtype).encode())
    for index in items:
        digest.update(np.ascontiguousarray(array[index]).tobytes())
    return digest.hexdigest()


def _folder_set(root, paths, classes, chosen, preprocessing, seed):
    labelled = classes[0] is not None
    return ImageSet(
        items=tuple(paths[i] for i in chosen),
        preprocessing=preprocessing,
        fingerprint=fingerprint([paths[i] for i in chosen]),
        source=f"folder {root}",
        labels=tuple(classes[i] for i in chosen) if labelled else None,
        classes=tuple(sorted(set(classes))) if labelled else None,
        seed=seed,
        root=str(root if Path(root).is_dir() else Path(root).parent),
    )


def load_array_file(path):
    """(images, labels or None) from .npy, or .npz with `x` (and maybe `y`)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a .npy or .npz file")
    if not path.is_file():
        raise DataError(f"array file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded, None
        with loaded:  # an .npz reads (and can fail) member by member
            keys = list(loaded.keys())
            if "x" not in keys and len(keys) != 1:
                raise DataError(f"{path} must hold an array named 'x' (and optionally labels 'y'); "
                                f"found: {', '.join(keys)}")
            images = loaded["x" if "x" in keys else keys[0]]
            labels = loaded["y"] if "y" in keys else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"cannot read {path} as a numpy array file without pickle ({reason}); "
                        "save plain numeric arrays with numpy.savez") from error
    return images, labels


def check_labels(labels, count, name):
    """`labels` as int64 class indices, one per image; refuses what would
    silently score the wrong images or classes."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != count:
        raise DataError(f"{name} has labels 'y' of shape {labels.shape} for {count} images; give one class index "
                        f"per image, shape ({count},) (for one-hot labels, take their argmax)")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.number):
        raise DataError(f"{name} has labels 'y' of dtype {labels.dtype}; give integer class indices")
    if np.issubdtype(labels.dtype, np.floating):
        fractional = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        if fractional.size:
            raise DataError(f"{name} has labels 'y' that are not whole numbers (e.g. {fractional[0]}); "
                            "give integer class indices")
    if labels.size and labels.min() < 0:
        raise DataError(f"{name} has negative labels 'y' (e.g. {labels.min()}); class indices start at 0")
    return labels.astype(np.int64)


def check_array(images, preprocessing, preprocessed, name):
    """Reject what would silently calibrate or evaluate on garbage."""
    if preprocessed and images.shape[1:] != preprocessing.shape:
        raise DataError(
            f"{name} has shape {images.shape}; preprocessed input must be (N, {', '.join(map(str, preprocessing.shape))})"
        )
    if not preprocessed and not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))):
        raise DataError(f"{name} has shape {images.shape}; raw images must be (N, H, W, 3), (N, H, W, 1) or (N, H, W)")
    if not preprocessed and images.ndim == 3 and images.shape[-1] in (1, 3, 4):
        count, height, width = images.shape
        raise DataError(f"{name} has shape {images.shape}: one {count}x{height} image of {width} channels, not "
                        f"{count} grayscale images {width} pixels wide; give a batch: x[None] for one image "
                        f"(x[None, ..., :3] for RGBA), or x[..., None] for grayscale images {width} pixels wide")
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise DataError(f"{name} has dtype {images.dtype}; expected integer or floating-point pixels")
    if np.issubdtype(images.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(images)))
        if bad:
            raise DataError(f"{name} contains {bad} NaN or Inf values; clean the data first")
    if not preprocessed and images.size:
        check_pixel_range(images, name)


def check_pixel_range(images, name):
    """Raw images are 0..255 pixels: floats in 0..1, or values far outside
    0..255, would be preprocessed into inputs the model never saw."""
    low, high = float(images.min()), float(images.max())
    hint = "or add --preprocessed if they are already model input"
    if np.issubdtype(images.dtype, np.floating) and 0 < high <= 1:
        raise DataError(f"{name} holds floats in {low:g}..{high:g}; raw images are 0..255 pixels: multiply by 255, "
                        + hint)
    if low < -PIXEL_SLACK or high > 255 + PIXEL_SLACK:
        raise DataError(f"{name} holds values {low:g}..{high:g}; raw images are 0..255 pixels, " + hint)


def images_from_array(images, preprocessing, size=DEFAULT_CALIBRATION_SIZE, seed=0, labels=None,
                      preprocessed=False, source="array"):
    images = np.asarray(images)
    check_array(images, preprocessing, preprocessed, source)
    if len(images) == 0:
        raise DataError(f"{source} holds no images")
    if labels is not None:
        labels = check_labels(labels, len(images), source)
    strata = [None] * len(images) if labels is None else [int(y) for y in np.asarray(labels)]
    order = stratified_order(strata, seed)
    chosen = order if size is None else order[:size]
    return _array_set(images, labels, chosen, preprocessing, preprocessed, source, seed)


def _array_set(images, labels, chosen, preprocessing, preprocessed, source, seed):
    return ImageSet(
        items=tuple(chosen),
        preprocessing=preprocessing,
        fingerprint=fingerprint(chosen, images),
        source=source,
        labels=None if labels is None else tuple(int(labels[i]) for i in chosen),
        array=images,
        preprocessed=preprocessed,
        seed=seed,
    )


def image_set(source, preprocessing, size=DEFAULT_CALIBRATION_SIZE, seed=0, preprocessed=False, check_readable=True):
    """Dispatch on the source: a folder of images, a .npy/.npz file, an
    array, or any iterable of images or batches of images.

    `check_readable=False` skips decoding every image up front (for large
    evaluation folders); an unreadable one then stops the iteration."""
    if size is not None and size < 1:
        raise DataError(f"the number of samples must be at least 1. Received: {size}")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix.lower() in (".npy", ".npz"):
            images, labels = load_array_file(path)
            return images_from_array(images, preprocessing, size, seed, labels, preprocessed, source=str(path))
        if not path.exists():
            raise DataError(f"data not found: {path} (give an image folder, a .npy or a .npz file)")
        if preprocessed:  # image files are always preprocessed here: the flag would be dropped without a word
            raise DataError(f"--preprocessed is for .npy/.npz arrays that are model input already, and {path} holds "
                            "image files (preprocessed as the preprocessing options say): leave out --preprocessed")
        return images_from_folder(path, preprocessing, size, seed, check_readable)
    if isinstance(source, np.ndarray):
        return images_from_array(source, preprocessing, size, seed, None, preprocessed)
    items = [np.asarray(item) for item in source]
    if not items:
        raise DataError("the iterable yielded no images")
    images = _stack_preprocessed(items, preprocessing.shape) if preprocessed else _stack_raw(items)
    return images_from_array(images, preprocessing, size, seed, None, preprocessed, source="python iterable")


def _stack_preprocessed(items, shape):
    """Preprocessed items may be single samples or batches of them."""
    for item in items:
        if item.shape != shape and item.shape[1:] != shape:
            raise DataError(f"an item has shape {item.shape}; preprocessed input must be {shape} or (N, *{shape})")
    return np.concatenate([item[None] if item.shape == shape else item for item in items])


def _stack_raw(items):
    """Raw items may be single images (H, W[, C]) or batches (N, H, W[, C])."""
    singles = []
    for item in items:
        is_batch = item.ndim == 4 or (item.ndim == 3 and item.shape[-1] not in (1, 3))
        singles.extend(item if is_batch else [item])
    shapes = {np.shape(s) for s in singles}
    if len(shapes) != 1:
        raise DataError(f"raw images in an iterable must share one shape; found {sorted(shapes)}")
    return np.stack(singles)


def calibration_set(source, preprocessing, size=DEFAULT_CALIBRATION_SIZE, seed=0, preprocessed=False):
    """A calibration set; warns when it is too small to trust."""
    images = image_set(source, preprocessing, size, seed, preprocessed)
    if size is not None and len(images) < size:
        warnings.warn(f"asked for {size} calibration samples, but {images.source} holds only {len(images)}; "
                      f"calibrating on {len(images)}", DataWarning, stacklevel=2)
    if len(images) < FEW_SAMPLES:
        warnings.warn(
            f"only {len(images)} calibration samples; int8 ranges from fewer than {FEW_SAMPLES} are unreliable "
            f"(100-500 is typical)",
            DataWarning,
            stacklevel=2,
        )
    return images


def subset(images, start, stop=None):
    """Items start..stop of an ImageSet, with their own fingerprint."""
    items = images.items[start:stop]
    return dataclasses.replace(
        images,
        items=items,
        labels=None if images.labels is None else images.labels[start:stop],
        fingerprint=fingerprint(items, images.array),
        decoded=None,
    )


def holdout_split(source, preprocessing, calibration_size=DEFAULT_CALIBRATION_SIZE, seed=0, preprocessed=False,
                  eval_size=None):
    """(calibration, evaluation): two disjoint sets of one source. The
    calibration set is the seeded, class-stratified subset that
    calibration_set() picks; the evaluation set is what follows it in the
    same order (`eval_size` of it, or all), so it is stratified too and never
    holds a calibration image."""
    calibration = calibration_set(source, preprocessing, calibration_size, seed, preprocessed)
    whole = image_set(source, preprocessing, None, seed, preprocessed, check_readable=False)
    position = {item: index for index, item in enumerate(whole.items)}
    first_held_out = max(position[item] for item in calibration.items) + 1
    if first_held_out >= len(whole):
        raise DataError(
            f"{whole.source} holds {len(whole)} images: none left to evaluate on after calibrating on "
            f"{len(calibration)}; lower --calibration-size or give --eval"
        )
    stop = None if eval_size is None else first_held_out + eval_size
    return calibration, subset(whole, first_held_out, stop)


def images_by_id(source, preprocessing, ids, preprocessed=False, seed=0):
    """The images with these sample ids (see ImageSet.sample_ids), in this
    order, from a folder, a .npy/.npz file or an array (`seed`: that of the
    selection the ids came from, for the record). Only those images are
    fingerprinted; ids the source lacks are refused."""
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() not in (".npy", ".npz"):
        root = Path(source)
        paths, classes = scan_image_folder(root)
        base = root if root.is_dir() else root.parent
        chosen = _positions({path.relative_to(base).as_posix(): index for index, path in enumerate(paths)}, ids,
                            f"folder {root}")
        return _folder_set(root, paths, classes, chosen, preprocessing, seed)
    if isinstance(source, (str, Path)):
        (images, labels), name = load_array_file(source), str(source)
    else:
        images, labels, name = np.asarray(source), None, "array"
    check_array(images, preprocessing, preprocessed, name)
    if labels is not None:
        labels = check_labels(labels, len(images), name)
    chosen = _positions({index: index for index in range(len(images))}, ids, name)
    return _array_set(images, labels, chosen, preprocessing, preprocessed, name, seed)


def _positions(position_of_id, ids, source):
    missing = [sample_id for sample_id in ids if sample_id not in position_of_id]
    if missing:
        raise DataError(f"{len(missing)} of the {len(ids)} images are missing from {source} "
                        f"(e.g. {missing[0]!r}); give the data the golden outputs were made from")
    return [position_of_id[sample_id] for sample_id in ids]


def check_disjoint(calibration, evaluation):
    """Refuse to measure accuracy on the images the model was calibrated on:
    the same files or array rows, or copies of them elsewhere (the same
    bytes under another name)."""
    shared = sorted(calibration.identities() & evaluation.identities())
    if not shared:
        calibrated = item_digests(calibration)
        shared = sorted(f"{name} (the bytes of {calibrated[key]})" for key, name in
                        item_digests(evaluation, {size for size, _ in calibrated}).items() if key in calibrated)
    if shared:
        raise DataError(
            f"{len(shared)} evaluation images are also calibration images (e.g. {shared[0]}); "
            "give a held-out --eval, or leave --eval out to split the calibration source"
        )


def item_digests(images, sizes=None):
    """{(byte count, sha256): identity} of the items of `images` (an image
    file's bytes, an array row's); with `sizes`, only the items of those byte
    counts are read (a file's size costs no read)."""
    from ..files import file_sha256

    digests = {}
    for item, identity in zip(images.items, images.item_identities()):
        if images.array is None:
            size = os.path.getsize(item)
            if sizes is None or size in sizes:
                digests[size, file_sha256(item)] = identity
        else:
            row = np.ascontiguousarray(images.array[item])
            if sizes is None or row.nbytes in sizes:
                digests[row.nbytes, hashlib.sha256(row.tobytes()).hexdigest()] = identity
    return digests


def _channel_option(name, meaning):
    return option(f"--{name}", default=None, type=functools.partial(parse_channel_values, name), metavar="R,G,B",
                  help=f"custom preprocessing: one number or three (RGB) that {meaning}")


@dataclass(frozen=True, kw_only=True)
class PreprocessingRequest:
    """The preprocessing a request asks for (a preset, or custom mean, std
    and scale), before the model's input size is known. None: the default.
    Mean, std and scale also take "R,G,B" text, as typed on a command line."""

    preprocessing: str = option(
        "--preprocessing", default=None, choices=PREPROCESSING_MODES,
        help="how images become model input: caffe (BGR minus the ImageNet mean, for ImageNet ResNets; default), "
             "tf (RGB -1..1), torch (RGB 0..1, ImageNet mean and std), raw (RGB 0..255, for models that preprocess "
             "inside) or custom (implied by --mean/--std/--scale)")
    scale: tuple = _channel_option("scale", "multiplies the RGB pixels (default: 1)")
    mean: tuple = _channel_option("mean", "is subtracted after --scale (default: 0)")
    std: tuple = _channel_option("std", "divides after --mean (default: 1)")

    def __post_init__(self):
        for name in NORMALIZATION_FIELDS:
            if isinstance(getattr(self, name), str):
                try:
                    object.__setattr__(self, name, parse_channel_values(name, getattr(self, name)))
                except DataError as error:
                    raise DataError(f"{name}: {error}") from None

    def preprocessing_at(self, height, width):
        return Preprocessing(height, width, self.preprocessing, self.mean, self.std, self.scale)

    @property
    def preprocessing_given(self):
        """Whether the request names a preprocessing (a mode, or mean, std or scale) rather than taking the default."""
        return any(getattr(self, name) is not None for name in ("preprocessing", *NORMALIZATION_FIELDS))


def recorded_preprocessing_of(record, height=None, width=None):
    """The Preprocessing a calibration record (ImageSet.describe(), as a
    recipe or a statistics file keeps it) says its images were made with,
    at `height` x `width` where given; None where they were model input
    already or the record says nothing of it."""
    if not isinstance(record, dict) or record.get("preprocessed_input") or \
            not isinstance(record.get("preprocessing"), dict):
        return None
    size = {} if height is None else {"height": height, "width": width}
    return Preprocessing.from_dict({**record["preprocessing"], **size})


def preprocessing_text(preprocessing):
    """A Preprocessing in the options that ask for it."""
    if preprocessing.mode != CUSTOM:
        return f"--preprocessing {preprocessing.mode}"
    return " ".join(f"--{name} {','.join(repr(float(value)) for value in getattr(preprocessing, name))}"
                    for name in ("scale", "mean", "std"))


@dataclass(frozen=True, kw_only=True)
class PreprocessedRequest:
    preprocessed: bool = option("--preprocessed", default=False, action="store_true",
                                help="the arrays given are already model input")


def seed_number(text):
    """A seed as numpy takes it: a whole number from 0 to 2**32 - 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"--seed is a whole number from 0 to {2**32 - 1}. Received: {text}")
    return value


@dataclass(frozen=True, kw_only=True)
class SeedRequest:
    seed: int = option("--seed", default=0, type=seed_number,
                       help="seed of the data subsets and of random weights (default: 0)")


def model_input_batch(model_path, source, batch, request, preprocessed=False):
    """`batch` inputs for a .tflite/.onnx model from an image, image folder or
    array file, preprocessed as `request` (a PreprocessingRequest) asks,
    repeated to fill the batch."""
    from ..device.runtime import open_runner
    from ..quiet import native_output_silenced

    with native_output_silenced():  # the runtime's start-up line would precede any error
        height, width = open_runner(model_path).input_shape[:2]
    images = image_set(source, request.preprocessing_at(height, width), size=None, preprocessed=preprocessed)
    samples = list(images.samples())
    return np.stack([samples[i % len(samples)] for i in range(batch)])
