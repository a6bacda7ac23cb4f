"""Expected failures. The CLI catches EdgeResnetError once and prints its
message as one line with exit code 2; anything else is a bug and keeps its
traceback."""


class EdgeResnetError(Exception):
    """Base class: bad input or usage that the user can fix."""


class ConfigError(EdgeResnetError):
    """An argument combination the toolkit cannot build or run."""


class WeightsError(EdgeResnetError):
    """Weights that are missing, unreadable, or for another architecture."""


class ModelError(EdgeResnetError):
    """A model file that is missing or cannot be loaded."""


class DataError(EdgeResnetError):
    """Calibration or evaluation data that is missing, empty or malformed."""


class ConversionError(EdgeResnetError):
    """A model the exporter cannot convert faithfully (unsupported operator)."""


class BudgetNotMet(Exception):
    """An accuracy budget the search could not reach: the CLI exits 1 (a
    failed gate), after the best artifact and its record are written."""
