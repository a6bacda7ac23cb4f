"""Writing outputs so that an interrupted run never leaves a file that looks
finished: write under a temporary name beside the target, rename when done."""

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from .options import option


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


@dataclass(frozen=True, kw_only=True)
class ForceRequest:
    force: bool = option("--force", default=False, action="store_true",
                         help="write into a non-empty output, replacing an earlier run's files")


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


def lock_path(output):
    """Beside `output`, like the staging folder, so a killed run leaves no output folder behind."""
    output = Path(output).resolve()
    return output.parent / f".{output.name}.lock"


def _locked_descriptor(path):
    """An open descriptor of `path` holding its exclusive lock, with this
    process's PID written in; None when another process holds the lock."""
    import fcntl

    while True:
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        try:
            still_there = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            still_there = False
        if still_there:
            os.ftruncate(descriptor, 0)
            os.write(descriptor, str(os.getpid()).encode())
            return descriptor
        os.close(descriptor)  # its last holder removed it as we opened it: lock the next one


@contextlib.contextmanager
def output_lock(output):
    """Hold `output` for this process while the block runs: a second run into
    the same directory gets one line instead of replacing this run's files.
    The lock is the kernel's (flock) on a file beside the output that holds
    the PID, so it ends with the process, however the process ends; the file
    a killed run leaves is simply locked again."""
    from .errors import ConfigError

    path = lock_path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = _locked_descriptor(path)
    except OSError as error:
        raise ConfigError(f"cannot write the output directory {Path(output).resolve()} (its lock {path.name}: "
                          f"{error.strerror or error}); choose another --output") from error
    if descriptor is None:
        try:
            holder = path.read_text().strip()
        except OSError:
            holder = ""
        raise ConfigError(
            f"another edge-resnet run ({f'PID {holder}' if holder.isdigit() else 'starting'}) is writing "
            f"{Path(output).resolve()}; wait for it to finish or choose another --output (the lock is {path})"
        )
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before releasing, so no one locks a file that is gone
        os.close(descriptor)


@contextlib.contextmanager
def staged_output(output, force=False):
    """Lock `output`, then yield a staging folder (see open_staging) that is
    removed if the block fails; publish() it to finish."""
    import shutil

    with output_lock(output):
        staging = open_staging(output, force)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


class UnsafeNameWarning(UserWarning):
    """An earlier run's file list named something that is not a plain file
    of the output directory; it was left alone."""


def is_plain_name(name):
    """A bare file name: no separator, no "..", not absolute."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "\\" not in name


def publish(staging, output, replaced=(), last=()):
    """Move every file of a finished run from `staging` into `output`: the
    files named in `last` (the report) after all others, after deleting the
    files in `replaced` (an earlier run's) that this run does not write.
    Only regular files named by a bare name inside `output` are ever
    deleted; anything else in `replaced` is named in a warning and left alone."""
    import shutil
    import warnings

    output = Path(output).resolve()
    if not output.exists():
        os.replace(staging, output)
        return
    names = sorted(path.name for path in Path(staging).iterdir())
    refused = []
    for name in replaced:
        path = output / name if is_plain_name(name) else None
        if path is not None and path.is_file() and not path.is_symlink():
            if name not in names:
                path.unlink()
        elif path is None or path.exists() or path.is_symlink():
            refused.append(repr(name))
    if refused:
        warnings.warn(f"the earlier run's report lists {len(refused)} entries that are not plain files of {output}; "
                      f"left alone: {', '.join(refused[:5])}", UnsafeNameWarning, stacklevel=2)
    for name in sorted(names, key=lambda name: name in last):
        os.replace(Path(staging) / name, output / name)
    shutil.rmtree(staging, ignore_errors=True)


def relocated(value, staging, output):
    """`value` (JSON-like) with every path under `staging` rewritten to the
    same file under `output`, so a published report names published files."""
    staging, output = str(Path(staging)), str(Path(output))
    if isinstance(value, dict):
        return {key: relocated(item, staging, output) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [relocated(item, staging, output) for item in value]
    if isinstance(value, str) and (value == staging or value.startswith(staging + os.sep)):
        return output + value[len(staging):]
    return value


def check_writable(path, kind="file"):
    """Refuse, before any work, an output `path` (a "file" or a "directory")
    that cannot be made: a file where a folder must be, or the other way round."""
    from .errors import ConfigError

    path = Path(path)
    if kind == "file" and path.is_dir():
        raise ConfigError(f"the output {path} is a directory; give a file name")
    if kind == "directory" and path.exists() and not path.is_dir():
        raise ConfigError(f"the output {path} is a file; give a directory")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write {path}: {folder} is a file, not a folder; choose another output")


def refuse_writing_over_inputs(outputs, inputs, kind="file"):
    """One line instead of replacing a user's input with an output (a "file"
    or a "directory"), or failing after all the work on an output that
    cannot be written."""
    from .errors import ConfigError

    for output in outputs:
        if output:
            check_writable(output, kind)
    existing = {Path(path).resolve(): path for path in inputs if path and Path(path).exists()}
    for output in outputs:
        if output and Path(output).resolve() in existing:
            raise ConfigError(
                f"the output {output} is the input {existing[Path(output).resolve()]}: writing it would replace "
                "your file; choose another output name"
            )


def file_sha256(path):
    """SHA-256 of a file, read in 1 MB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
