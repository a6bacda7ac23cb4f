"""Writing outputs so that an interrupted run never leaves a file that looks
finished: write under a temporary name beside the target, rename when done."""

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_output(final_path):
    """Yield a temporary path (same folder, same suffix) to write to; it
    becomes `final_path` only if the block completes."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = final_path.with_name(f".{final_path.stem}.partial-{os.getpid()}{final_path.suffix}")
    try:
        yield temporary
        os.replace(temporary, final_path)
    finally:
        temporary.unlink(missing_ok=True)
