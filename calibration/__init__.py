"""Embedded default image data (installed as edge_resnet.calibration)."""

from importlib.resources import files


def digits_folder():
    """The folder of embedded digit images, one sub-folder per class."""
    return files(__name__) / "digits"
