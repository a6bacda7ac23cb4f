"""The terminal: TensorFlow's native logging kept off it, and progress bars."""

import contextlib
import io
import os
import sys


@contextlib.contextmanager
def native_output_silenced():
    """Send file descriptors 1 and 2 and Python's stdout to /dev/null for the
    block (TensorFlow's C++ logs and its converter's prints ignore
    TF_CPP_MIN_LOG_LEVEL in part). Yields a text stream on the real stderr,
    for progress bars. Exceptions still propagate with their messages."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    real_stderr = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    try:
        for fd in saved:
            os.dup2(devnull, fd)
        with contextlib.redirect_stdout(io.StringIO()):
            yield real_stderr
    finally:
        sys.stdout.flush()
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
        os.close(devnull)
        real_stderr.close()


def progress_bar(description, stream=None):
    """A progress callable for parity.compare(): a bar counting images."""
    from tqdm import tqdm

    def wrap(batches, total):
        with tqdm(total=total, desc=description, unit="img", file=stream or sys.stderr,
                  bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}]") as bar:
            for batch in batches:
                yield batch
                bar.update(len(batch))

    return wrap


def sample_progress(description, stream=None):
    """A progress callable for collect_statistics(): a bar counting samples."""
    from tqdm import tqdm

    def wrap(samples, total):
        yield from tqdm(samples, total=total, desc=description, unit="img", file=stream or sys.stderr,
                        bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")

    return wrap


def import_keras_quietly():
    """Import Keras (and TensorFlow, its backend) once, up front, without the
    C++ start-up chatter that would drown the one line users need."""
    from .errors import EdgeResnetError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ.get("EDGE_RESNET_VERBOSE_IMPORT"):
        return
    try:
        with native_output_silenced():
            import keras  # noqa: F401
    except ImportError as error:
        raise EdgeResnetError(f"this command needs Keras and TensorFlow ({error}); install them with: "
                              'pip install "edge-resnet[full]"') from error


def one_line_warnings(prog):
    """Warnings as `prog: warning: ...` lines, not source excerpts."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show
