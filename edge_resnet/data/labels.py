"""Class labels of an image set and the model outputs they name."""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..options import option


@dataclass(frozen=True, kw_only=True)
class LabelsRequest:
    labels: str = option("--labels", default=None, metavar="FILE", help="class names in model-output order, one per line")


def class_index(labels, class_names):
    """Map the data set's labels (folder names or integers) to model outputs."""
    if labels is None:
        return None
    if all(isinstance(label, (int, np.integer)) for label in labels):
        return np.asarray(labels, dtype=np.int64)
    lookup = {name: index for index, name in enumerate(class_names)}
    unknown = sorted({label for label in labels if label not in lookup})
    named = Counter(class_names)
    ambiguous = sorted({label for label in labels if named[label] > 1})
    if ambiguous:
        outputs = [index for index, name in enumerate(class_names) if name == ambiguous[0]]
        raise DataError(f"class folder {ambiguous[0]!r} is the name of outputs {', '.join(map(str, outputs))} in the "
                        "labels list: give each model output its own class name")
    if unknown:
        raise DataError(
            f"class folder(s) {', '.join(unknown[:3])} are not in the labels list; "
            "give --labels with one class per model output, in output order"
        )
    return np.asarray([lookup[label] for label in labels], dtype=np.int64)


def output_indices(data, classes, class_names=None):
    """The model output each of `data`'s labels names (None without labels),
    by `class_names` or the data's own; labels past the outputs are refused."""
    labels = class_index(data.labels, class_names or default_class_names(data, classes))
    if labels is not None and labels.size:
        check_label_range(int(labels.max()), classes)
    return labels


def check_label_range(largest, classes):
    """Refuse a label past the model's outputs, which no top-1 could ever match."""
    if largest >= classes:
        raise DataError(f"labels go up to {largest} but the model has {classes} outputs; give each image the index "
                        f"of its model output, 0 to {classes - 1} (class folders: --labels maps them)")


def with_class_names(data, class_names):
    """`data` with its class folders mapped to outputs by `class_names`
    (--labels, in output order); unchanged without names or labels."""
    import dataclasses

    if not class_names or data is None or data.labels is None:
        return data
    return dataclasses.replace(data, classes=tuple(class_names))


def check_labels_file(path):
    """Refuse a --labels file that cannot be read as class names, before any work."""
    label_names(path)


def read_labels_file(path, classes):
    names = label_names(path)
    if len(names) != classes:
        raise DataError(f"{path} has {len(names)} labels but the model has {classes} outputs; give one per line")
    return names


def label_names(path):
    """The class names of a --labels file, one per non-blank line; refused
    in one line where it is no UTF-8 text. A name may repeat (ImageNet's
    readable list names "crane" twice); a class folder of that name is
    refused where folders are mapped (class_index)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; give --labels a text file with one class name per line, in "
                        "model-output order") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def default_class_names(data, classes):
    """The source's class names (sorted class folders, or --labels) when
    they fit the model, else 0..classes-1."""
    if data.labels is not None and not isinstance(data.labels[0], (int, np.integer)):
        names = list(data.classes or sorted(set(data.labels)))
        if len(names) != classes:
            raise DataError(
                f"the data has {len(names)} class folders but the model has {classes} outputs; "
                "give --labels with one class name per model output"
            )
        return names
    return [str(i) for i in range(classes)]
