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


STAGING_MARK = ".partial-"


def _staging_folders(output):
    return sorted(output.parent.glob(f".{output.name}{STAGING_MARK}*"))


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(output):
    """Delete what killed runs left: hidden staging folders whose process is gone."""
    import shutil

    for folder in _staging_folders(Path(output)):
        pid = folder.name.rsplit(STAGING_MARK, 1)[1]
        if not pid.isdigit() or not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def open_staging(output, force=False):
    """A hidden folder beside `output` to write a whole run into: nothing in
    `output` changes until publish(). Refuses a non-empty `output` without
    `force`."""
    from .errors import ConfigError

    output = Path(output).resolve()  # "." has no name to hide a staging folder under
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file; give a directory")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise ConfigError(
            f"output directory {output} is not empty; add --force to replace an earlier run's files, "
            "or choose another --output"
        )
    staging = output.parent / f".{output.name}{STAGING_MARK}{os.getpid()}"
    try:
        remove_stale_staging(output)
        staging.mkdir(parents=True)
        probe = staging / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"cannot write the output directory {output}: {error.strerror or error}; choose another --output"
        ) from error
    return staging


def publish(staging, output, replaced=(), last=()):
    """Move every file of a finished run from `staging` into `output`: the
    files named in `last` (the report) after all others, after deleting the
    files in `replaced` (an earlier run's) that this run does not write."""
    import shutil

    output = Path(output).resolve()
    if not output.exists():
        os.replace(staging, output)
        return
    names = sorted(path.name for path in Path(staging).iterdir())
    for name in set(replaced) - set(names):
        (output / name).unlink(missing_ok=True)
    for name in sorted(names, key=lambda name: name in last):
        os.replace(Path(staging) / name, output / name)
    shutil.rmtree(staging, ignore_errors=True)
