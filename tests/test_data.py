"""Calibration and evaluation data: real image files in every mode a user
has, arrays, iterables, subsets, and the errors for bad input."""

import numpy as np
import pytest
from PIL import Image

import edge_resnet
from edge_resnet.data.images import (
    DataWarning,
    Preprocessing,
    calibration_set,
    check_disjoint,
    holdout_split,
    image_set,
    read_rgb,
    scan_image_folder,
)
from edge_resnet.errors import DataError


def write_image(path, array, mode=None, **save_options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path, **save_options)
    return path


def rgb_noise(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def class_folder(root, classes=3, per_class=10, size=40):
    for label in range(classes):
        for index in range(per_class):
            write_image(root / f"class_{label}" / f"{index:02d}.png", rgb_noise(size, size, seed=label * 100 + index))
    return root


def test_every_image_mode_becomes_uint8_rgb(tmp_path):
    rgb = rgb_noise(20, 30)
    gray = rgb[..., 0]
    paths = {
        "jpeg": write_image(tmp_path / "a.jpg", rgb, quality=95),
        "png_gray": write_image(tmp_path / "b.png", gray),
        "png_rgba": write_image(tmp_path / "c.png", np.dstack([rgb, np.full((20, 30), 128, np.uint8)])),
        "bmp": write_image(tmp_path / "d.bmp", rgb),
        "webp": write_image(tmp_path / "e.webp", rgb, lossless=True),
    }
    palette = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.save(tmp_path / "f.png")
    paths["palette"] = tmp_path / "f.png"
    for name, path in paths.items():
        pixels = read_rgb(path)
        assert pixels.shape == (20, 30, 3) and pixels.dtype == np.uint8, name
    np.testing.assert_array_equal(read_rgb(paths["bmp"]), rgb)
    np.testing.assert_array_equal(read_rgb(paths["webp"]), rgb)
    np.testing.assert_array_equal(read_rgb(paths["png_rgba"]), rgb)
    np.testing.assert_array_equal(read_rgb(paths["png_gray"]), np.dstack([gray] * 3))


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    wide = np.array([[0, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_rgb(path)[0, :, 0], [0, 128, 255])


def test_preprocessing_resizes_the_shorter_side_then_centre_crops(tmp_path):
    image = rgb_noise(256, 256)
    sample = Preprocessing(224, 224)(image)
    expected = edge_resnet.preprocess_input(image[16:240, 16:240])
    np.testing.assert_allclose(sample, expected, atol=1e-4)
    wide = Preprocessing(224, 224)(rgb_noise(300, 500))
    assert wide.shape == (224, 224, 3) and wide.dtype == np.float32
    raw = Preprocessing(32, 32, mode="raw")(rgb_noise(32, 32))
    np.testing.assert_array_equal(raw, rgb_noise(32, 32).astype(np.float32))


def test_ratio_of_shorter_side_holds_for_other_input_sizes():
    # 32 / 224 * 256 = 36.57 -> a 37-pixel image is used as it is, centre-cropped.
    image = rgb_noise(37, 37)
    sample = Preprocessing(32, 32, mode="raw")(image)
    np.testing.assert_array_equal(sample, image[2:34, 2:34].astype(np.float32))


def test_class_folders_give_stratified_seeded_subsets(tmp_path):
    root = class_folder(tmp_path / "data")
    paths, classes = scan_image_folder(root)
    assert len(paths) == 30 and sorted(set(classes)) == ["class_0", "class_1", "class_2"]
    subset = image_set(root, Preprocessing(32, 32), size=9, seed=1)
    assert sorted(subset.labels) == ["class_0"] * 3 + ["class_1"] * 3 + ["class_2"] * 3
    assert image_set(root, Preprocessing(32, 32), size=9, seed=1).items == subset.items
    assert image_set(root, Preprocessing(32, 32), size=9, seed=2).items != subset.items


def test_flat_folder_has_no_labels_and_is_searched_recursively(tmp_path):
    write_image(tmp_path / "a.png", rgb_noise(40, 40))
    write_image(tmp_path / "deeper" / "still" / "b.jpeg", rgb_noise(40, 40, 1))
    (tmp_path / "notes.txt").write_text("not an image")
    images = image_set(tmp_path, Preprocessing(32, 32), size=None)
    assert len(images) == 2 and images.labels is None


def test_image_set_is_lazy_reiterable_and_batched(tmp_path):
    root = class_folder(tmp_path, classes=2, per_class=5)
    images = image_set(root, Preprocessing(32, 32), size=None).with_batch_size(4)
    assert images.array is None  # nothing decoded is held
    first, second = list(images), list(images)
    assert [b.shape for b in first] == [(4, 32, 32, 3), (4, 32, 32, 3), (2, 32, 32, 3)]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert first[0].dtype == np.float32


def test_unreadable_images_are_skipped_counted_and_named(tmp_path):
    root = class_folder(tmp_path, classes=2, per_class=6)
    (root / "class_0" / "broken.jpg").write_bytes(b"not really a jpeg")
    with pytest.warns(DataWarning, match=r"skipped 1 unreadable images: .*broken\.jpg"):
        images = image_set(root, Preprocessing(32, 32), size=None)
    assert len(images) == 12


def test_missing_or_empty_folders_are_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        image_set(tmp_path / "nowhere", Preprocessing(32, 32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        image_set(tmp_path / "empty", Preprocessing(32, 32))


def test_a_folder_of_only_unreadable_images_is_an_error(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="none of the images"):
        image_set(tmp_path, Preprocessing(32, 32))


def test_npz_arrays_with_labels_stratify_and_preprocessed_arrays_pass_through(tmp_path):
    x = np.stack([rgb_noise(32, 32, i) for i in range(20)])
    y = np.repeat([0, 1], 10)
    np.savez(tmp_path / "raw.npz", x=x, y=y)
    raw = image_set(tmp_path / "raw.npz", Preprocessing(32, 32), size=4)
    assert sorted(raw.labels) == [0, 0, 1, 1]
    np.testing.assert_allclose(raw.sample(raw.items[0]), edge_resnet.preprocess_input(x[raw.items[0]]), atol=1e-4)
    ready = edge_resnet.preprocess_input(x)
    np.save(tmp_path / "ready.npy", ready)
    passed = image_set(tmp_path / "ready.npy", Preprocessing(32, 32), size=None, preprocessed=True)
    np.testing.assert_array_equal(np.concatenate(list(passed.with_batch_size(7))), ready[list(passed.items)])


def test_grayscale_raw_arrays_become_rgb(tmp_path):
    gray = np.stack([rgb_noise(32, 32, i)[..., 0] for i in range(3)])
    np.save(tmp_path / "gray.npy", gray)
    images = image_set(tmp_path / "gray.npy", Preprocessing(32, 32, mode="raw"), size=None)
    sample = images.sample(0)
    np.testing.assert_array_equal(sample, np.dstack([gray[0]] * 3).astype(np.float32))


@pytest.mark.parametrize(
    "array, preprocessed, message",
    [
        (np.zeros((4, 30, 32, 3), np.float32), True, r"must be \(N, 32, 32, 3\)"),
        (np.zeros((4, 32, 32, 5), np.uint8), False, "raw images must be"),
        (np.full((4, 32, 32, 3), np.nan, np.float32), True, "NaN or Inf"),
        (np.zeros((0, 32, 32, 3), np.uint8), False, "holds no images"),
        (np.zeros((4, 32, 32, 3), np.complex64), False, "expected integer or floating-point pixels"),
    ],
)
def test_bad_arrays_are_refused_with_the_expected_shape(tmp_path, array, preprocessed, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=message):
        image_set(tmp_path / "bad.npy", Preprocessing(32, 32), preprocessed=preprocessed)


def test_image_files_are_not_taken_as_preprocessed_input(tmp_path):
    """--preprocessed with image files was dropped without a word (reference, bench, quantize)."""
    root = class_folder(tmp_path, classes=2, per_class=2)
    with pytest.raises(DataError, match="holds image files .*: leave out --preprocessed"):
        image_set(root, Preprocessing(32, 32), preprocessed=True)


def test_pickled_arrays_are_refused(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="without pickle"):
        image_set(tmp_path / "objects.npy", Preprocessing(32, 32))


def test_iterables_of_images_and_batches(tmp_path):
    def generator():
        yield rgb_noise(40, 40, 0)
        yield np.stack([rgb_noise(40, 40, 1), rgb_noise(40, 40, 2)])

    images = image_set(generator(), Preprocessing(32, 32), size=None)
    assert len(images) == 3
    assert len(list(images)) == len(list(images)) == 3
    with pytest.raises(DataError, match="preprocessed input must be"):
        image_set([np.zeros((31, 32, 3), np.float32)], Preprocessing(32, 32), preprocessed=True)


def test_few_samples_warn_and_zero_is_an_error(tmp_path):
    root = class_folder(tmp_path, classes=2, per_class=2)
    with pytest.warns(DataWarning, match="only 4 calibration samples"):
        calibration_set(root, Preprocessing(32, 32))
    with pytest.raises(DataError, match="at least 1"):
        calibration_set(root, Preprocessing(32, 32), size=0)


def test_fingerprint_follows_the_file_contents(tmp_path):
    root = class_folder(tmp_path, classes=2, per_class=3)
    before = image_set(root, Preprocessing(32, 32), size=None).fingerprint
    assert image_set(root, Preprocessing(32, 32), size=None).fingerprint == before
    write_image(root / "class_1" / "01.png", rgb_noise(40, 40, seed=999))
    assert image_set(root, Preprocessing(32, 32), size=None).fingerprint != before


def test_embedded_digits_are_real_labelled_images():
    from edge_resnet.calibration import digits_folder

    images = image_set(str(digits_folder()), Preprocessing(32, 32), size=None)
    assert len(images) == 597
    assert sorted(set(images.labels)) == [str(d) for d in range(10)]
    assert min(images.labels.count(str(d)) for d in range(10)) >= 50


def test_holdout_split_is_disjoint_stratified_and_seeded(tmp_path):
    root = class_folder(tmp_path / "data", classes=3, per_class=10, size=16)
    calibration, evaluation = holdout_split(root, Preprocessing(16, 16), calibration_size=12, seed=3)
    assert len(calibration) == 12 and len(evaluation) == 18
    assert not calibration.identities() & evaluation.identities()
    assert sorted(calibration.labels) == sorted(["class_0", "class_1", "class_2"] * 4)
    assert calibration.fingerprint != evaluation.fingerprint
    again = holdout_split(root, Preprocessing(16, 16), calibration_size=12, seed=3)
    assert [s.items for s in again] == [calibration.items, evaluation.items]
    assert len(holdout_split(root, Preprocessing(16, 16), 12, seed=3, eval_size=5)[1]) == 5


def test_holdout_split_of_an_array_and_its_limits(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=images, y=np.arange(20) % 2)
    calibration, evaluation = holdout_split(tmp_path / "d.npz", Preprocessing(16, 16), calibration_size=8)
    assert len(calibration) + len(evaluation) == 20 and not set(calibration.items) & set(evaluation.items)
    with pytest.raises(DataError, match="none left to evaluate"):
        holdout_split(tmp_path / "d.npz", Preprocessing(16, 16), calibration_size=20)


def test_evaluating_on_calibration_images_is_refused(tmp_path):
    root = class_folder(tmp_path / "data", classes=2, per_class=5, size=16)
    calibration = calibration_set(root, Preprocessing(16, 16), size=4)
    with pytest.raises(DataError, match="also calibration images"):
        check_disjoint(calibration, image_set(root, Preprocessing(16, 16), size=None))


def test_evaluating_on_copies_of_the_calibration_images_is_refused(tmp_path):
    """The same bytes under another name (a copied folder, the same array saved twice) are the same images."""
    import shutil

    root = class_folder(tmp_path / "data", classes=2, per_class=5, size=16)
    shutil.copytree(root, tmp_path / "copy")
    calibration = calibration_set(root, Preprocessing(16, 16), size=4)
    with pytest.raises(DataError, match=r"4 evaluation images are also calibration images \(e.g. .*copy.* \(the bytes "
                                        r"of .*data"):
        check_disjoint(calibration, image_set(tmp_path / "copy", Preprocessing(16, 16), size=None))
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    np.save(tmp_path / "b.npy", images[::-1])
    calibration = calibration_set(tmp_path / "a.npy", Preprocessing(16, 16), size=2)
    with pytest.raises(DataError, match="2 evaluation images are also calibration images"):
        check_disjoint(calibration, image_set(tmp_path / "b.npy", Preprocessing(16, 16), size=None))
    other = np.random.default_rng(1).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "c.npy", other)
    check_disjoint(calibration, image_set(tmp_path / "c.npy", Preprocessing(16, 16), size=None))  # other images pass


def test_a_cached_set_yields_the_same_samples_and_describes_the_same_source(tmp_path):
    root = class_folder(tmp_path / "data", classes=2, per_class=3, size=20)
    images = calibration_set(root, Preprocessing(16, 16), size=None)
    cached = images.cached()
    np.testing.assert_array_equal(np.stack(list(cached.samples())), np.stack(list(images.samples())))
    assert cached.describe() == images.describe()
    for path in root.rglob("*.png"):
        path.unlink()  # the cache reads no file again
    assert [len(batch) for batch in cached.with_batch_size(4)] == [4, 2]


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.arange(5) % 2, r"labels 'y' of shape \(5,\) for 8 images"),
        (np.eye(8, 2, dtype=np.int64), "for one-hot labels, take their argmax"),
        (np.array([0, 1, -1, 0, 1, 0, 1, 0]), "negative labels"),
        (np.array([0, 1.5, 1, 0, 1, 0, 1, 0]), "not whole numbers"),
        (np.array(list("abababab")), "give integer class indices"),
    ],
)
def test_labels_that_would_score_the_wrong_images_are_refused(tmp_path, labels, message):
    np.savez(tmp_path / "data.npz", x=np.stack([rgb_noise(32, 32, i) for i in range(8)]), y=labels)
    with pytest.raises(DataError, match=message):
        image_set(tmp_path / "data.npz", Preprocessing(32, 32), size=None)


def test_whole_float_labels_are_class_indices(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.stack([rgb_noise(32, 32, i) for i in range(4)]), y=np.array([0.0, 1, 2, 1]))
    assert sorted(image_set(tmp_path / "data.npz", Preprocessing(32, 32), size=None).labels) == [0, 1, 1, 2]


@pytest.mark.parametrize(
    "pixels, message",
    [
        (np.random.default_rng(0).random((4, 32, 32, 3)), r"floats in .*multiply by 255"),
        (np.full((4, 32, 32, 3), 1000, np.uint16), "values 1000..1000"),
        (np.full((4, 32, 32, 3), -50.0), "values -50..-50"),
    ],
)
def test_raw_arrays_outside_0_to_255_are_refused(tmp_path, pixels, message):
    np.save(tmp_path / "bad.npy", pixels)
    with pytest.raises(DataError, match=message + ".*--preprocessed"):
        image_set(tmp_path / "bad.npy", Preprocessing(32, 32))
    assert len(image_set(tmp_path / "bad.npy", Preprocessing(32, 32, mode="raw"), preprocessed=True)) == 4


def test_float_pixels_in_0_to_255_are_raw_images(tmp_path):
    np.save(tmp_path / "floats.npy", np.stack([rgb_noise(32, 32, i) for i in range(3)]).astype(np.float32))
    assert len(image_set(tmp_path / "floats.npy", Preprocessing(32, 32))) == 3


def test_an_image_too_large_to_decode_safely_is_one_error(tmp_path, monkeypatch):
    write_image(tmp_path / "huge" / "big.png", rgb_noise(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as a 20000x20000 image is to the real limit
    with pytest.raises(DataError, match="too large to decode safely"):
        image_set(tmp_path / "huge", Preprocessing(32, 32))
    with pytest.raises(DataError, match="too large to decode safely"):
        read_rgb(tmp_path / "huge" / "big.png")


def test_truncated_and_object_npz_files_are_one_error(tmp_path):
    np.savez_compressed(tmp_path / "whole.npz", x=np.stack([rgb_noise(32, 32, i) for i in range(4)]))
    content = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(content[: len(content) // 2])
    np.savez(tmp_path / "objects.npz", x=np.array([None, {"a": 1}], dtype=object))
    for name in ("truncated.npz", "objects.npz"):
        with pytest.raises(DataError, match="cannot read .* without pickle"):
            image_set(tmp_path / name, Preprocessing(32, 32))


def test_a_calibration_size_beyond_the_data_warns_with_both_numbers(tmp_path):
    root = class_folder(tmp_path, classes=2, per_class=8)
    with pytest.warns(DataWarning, match="asked for 50 calibration samples, but .* holds only 16"):
        assert len(calibration_set(root, Preprocessing(32, 32), size=50)) == 16


def test_linked_class_folders_count_and_hidden_folders_do_not(tmp_path):
    """A data set split with symbolic links is read whole (loops once); .ipynb_checkpoints is no class."""
    root = class_folder(tmp_path / "data", classes=2, per_class=3)
    class_folder(tmp_path / "elsewhere", classes=3, per_class=3)
    (root / "class_2").symlink_to(tmp_path / "elsewhere" / "class_2")
    (root / "class_1" / "loop").symlink_to(root)
    write_image(root / ".ipynb_checkpoints" / "x.png", rgb_noise(40, 40))
    write_image(root / "class_0" / "._00.png", rgb_noise(40, 40))  # macOS's metadata file, hidden
    paths, classes = scan_image_folder(root)
    assert sorted(set(classes)) == ["class_0", "class_1", "class_2"] and len(paths) == 9
    (root / "a_copy").symlink_to(root / "class_0")  # a link to a folder walked anyway is read as a copy would be
    paths, classes = scan_image_folder(root)
    assert classes.count("class_0") == classes.count("a_copy") == 3 and len(paths) == 12
    assert not any(part.startswith(".") for path in paths for part in path.relative_to(root).parts)


def test_image_links_to_nothing_are_named_in_a_warning(tmp_path):
    """A link whose image was moved or deleted is skipped, and said to be (it was skipped silently)."""
    root = class_folder(tmp_path / "data", classes=2, per_class=3)
    (root / "class_0" / "gone.png").symlink_to(tmp_path / "moved.png")
    with pytest.warns(DataWarning, match=r"skipped 1 image links under .*data that point to no file \(gone.png\)"):
        paths, classes = scan_image_folder(root)
    assert len(paths) == 6 and classes.count("class_0") == 3


def test_images_beside_class_folders_say_the_set_is_read_unlabelled(tmp_path):
    root = class_folder(tmp_path, classes=2, per_class=3)
    write_image(root / "stray.png", rgb_noise(40, 40))
    with pytest.warns(DataWarning, match=r"2 sub-folders but also 1 image\(s\) of its own \(stray.png\), so it is read "
                                         "unlabelled"):
        images = image_set(root, Preprocessing(32, 32), size=None)
    assert images.labels is None and len(images) == 7


def test_one_image_as_an_array_is_refused_not_read_as_a_batch_of_rows(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.full((32, 32, 3), 128, np.uint8))
    np.savez(tmp_path / "tall.npz", x=np.full((40, 32, 3), 128, np.uint8))
    with pytest.raises(DataError, match=r"one 40x32 image of 3 channels, not 40 grayscale images 3 pixels wide; give "
                                        r"a batch: x\[None\] for one image .* or x\[..., None\] for grayscale"):
        image_set(tmp_path / "tall.npz", Preprocessing(32, 32))
    np.savez(tmp_path / "gray.npz", x=np.full((4, 32, 32), 128, np.uint8))  # a batch of grayscale images
    assert len(image_set(tmp_path / "gray.npz", Preprocessing(32, 32), size=None)) == 4


def test_an_evaluation_image_that_cannot_be_opened_is_refused_before_the_work(tmp_path):
    from edge_resnet.data.images import check_image_headers

    root = class_folder(tmp_path, classes=2, per_class=3)
    evaluation = image_set(root, Preprocessing(32, 32), size=None, check_readable=False)
    check_image_headers(evaluation, "evaluation")
    (root / "class_1" / "zero.png").write_bytes(b"")
    evaluation = image_set(root, Preprocessing(32, 32), size=None, check_readable=False)
    with pytest.raises(DataError, match=r"cannot read evaluation image .*zero.png: .*; remove or replace the file"):
        check_image_headers(evaluation, "evaluation")
