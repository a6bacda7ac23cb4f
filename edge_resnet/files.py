"""Writing outputs so that an interrupted run never leaves a file that looks
finished: write under a temporary name beside the target, rename when done."""

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from .options import option


@contextlib.contextmanager
def atomic_output(final_path):
    """Yield a temporary path (same folder, same suffix) to write to; it
    becomes `final_path` only if the block completes. The temporary file is
    created exclusively under an unpredictable name (a link planted there
    is never written through), and is published only if it is still the
    regular file created here; the rename replaces a link at `final_path`,
    never the file it points to. A folder that cannot be made or written,
    or a full disk, is one line (ConfigError)."""
    import tempfile

    from .errors import ConfigError

    final_path = Path(final_path)
    refuse_dangling_link(final_path, itself=False)
    made = []
    try:
        made = make_folders(final_path.parent)
        descriptor, name = tempfile.mkstemp(prefix=f".{final_path.stem}{STAGING_MARK}", suffix=final_path.suffix,
                                            dir=final_path.parent)
    except OSError as error:
        remove_empty_folders(made)
        raise ConfigError(f"cannot write {final_path}: {error.strerror or error}; choose another output") from error
    temporary = Path(name)
    created = os.fstat(descriptor).st_ino
    with contextlib.suppress(OSError):  # mkstemp's 0600 would make every artifact private (no modes: FAT)
        os.fchmod(descriptor, 0o666 & ~current_umask())
    os.close(descriptor)
    published = False
    try:
        yield temporary
        check_still_ours(temporary, created)
        if final_path.is_dir() and not final_path.is_symlink():
            raise ConfigError(f"cannot write {final_path}: a folder is in the way; move it or choose another output")
        os.replace(temporary, final_path)
        published = True
    except OSError as error:
        if error.errno not in STORAGE_ERRNOS:  # not the output's fault: keep what it says
            raise
        raise ConfigError(f"cannot write {final_path}: {error.strerror or error}; choose another output, or free "
                          "space") from error
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if not published:
            remove_empty_folders(made)


def current_umask():
    """The process's umask: from Linux's /proc without touching it, else by setting it back at once."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def make_folders(folder):
    """Make `folder` with its missing parents; the folders made, deepest first (for remove_empty_folders)."""
    folder, missing = Path(folder).absolute(), []
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        if folder.name not in (".", ".."):  # a step of the path, not a folder of its own
            missing.append(folder)
        folder = folder.parent
    if missing:
        try:
            missing[0].mkdir(parents=True, exist_ok=True)
        except OSError:
            remove_empty_folders([path for path in missing if path.is_dir()])
            raise
    return missing


def remove_empty_folders(folders):
    """Undo make_folders after a failed run, deepest first, as far as the folders are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def dangling_link(path, itself=True):
    """The first symbolic link to nothing on the way to `path` (`path` too when `itself`), or None."""
    path = Path(path).absolute()  # not abspath: "link/.." goes through the link
    way = [*reversed(path.parents), *([path] if itself else [])]
    return next((step for step in way if step.is_symlink() and not step.exists()), None)


def refuse_dangling_link(path, itself=True):
    """One line instead of writing through a symbolic link to nothing: making the folders it names would put
    the output (and a failed run's empty folders) wherever the link points."""
    from .errors import ConfigError

    link = dangling_link(path, itself)
    if link is not None:
        raise ConfigError(f"cannot write {path}: {link} is a symbolic link to {os.readlink(link)}, which does not "
                          "exist; remove the link, or make what it points to")


# Where an output cannot be written: full, read-only, over quota, not allowed.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM)


def check_still_ours(path, inode):
    """Refuse to publish a temporary file that was swapped for something else."""
    import stat

    from .errors import ConfigError

    status = os.lstat(path)
    if not stat.S_ISREG(status.st_mode) or status.st_ino != inode:
        raise ConfigError(f"{path} was replaced while it was being written (by a link or another file); "
                          "nothing was published")


@dataclass(frozen=True, kw_only=True)
class ForceRequest:
    force: bool = option("--force", default=False, action="store_true",
                         help="write into a non-empty output, replacing an earlier run's files")


STAGING_MARK = ".partial-"
STAGING_MARKER = ".edge-resnet-staging"  # inside every staging folder: the PID of the run that made it


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


def stale_staging_pid(folder, output_name):
    """The PID of the killed run that made `folder`, or None where `folder`
    is not provably a staging folder of ours: its name is exactly
    .<output>.partial-<pid>-<random>, it is a real folder (not a link), and
    the marker inside names that same PID."""
    import re
    import stat

    match = re.fullmatch(re.escape(f".{output_name}{STAGING_MARK}") + r"(\d+)-[A-Za-z0-9_]{8}", folder.name)
    if match is None:
        return None
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return None
        marker = folder / STAGING_MARKER
        if not stat.S_ISREG(os.lstat(marker).st_mode) or marker.read_text().strip() != match.group(1):
            return None
    except (OSError, UnicodeDecodeError):
        return None
    return int(match.group(1))


def remove_stale_staging(output):
    """Delete what killed runs of ours left beside `output`: staging folders
    (see stale_staging_pid) whose process is gone. Nothing else is touched."""
    import shutil

    output = Path(output)
    for folder in _staging_folders(output):
        pid = stale_staging_pid(folder, output.name)
        if pid is not None and pid != os.getpid() and not _process_alive(pid):
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
    import tempfile

    try:
        remove_stale_staging(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}{STAGING_MARK}{os.getpid()}-", dir=output.parent))
        (staging / STAGING_MARKER).write_text(str(os.getpid()))
    except OSError as error:
        raise ConfigError(
            f"cannot write the output directory {output}: {error.strerror or error}; choose another --output"
        ) from error
    return staging


def lock_path(output, folder=False):
    """Beside `output`, like the staging folder, so a killed run leaves no output folder behind. A file
    output's own name is not followed: a link there is replaced when the file is published."""
    output = Path(output).absolute()
    output = output.resolve() if folder or output.name in ("", ".", "..") else output.parent.resolve() / output.name
    return output.parent / f".{output.name}.lock"


def _locked_descriptor(path):
    """An open descriptor of `path` holding its exclusive lock, with this
    process's PID written in; None when another process holds the lock."""
    import fcntl
    import stat

    from .errors import ConfigError

    while True:
        try:  # never through a link planted at the lock's name
            descriptor = os.open(path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            if os.path.islink(path):
                raise ConfigError(f"the lock {path} is a symbolic link, not a lock of ours; remove it or choose "
                                  "another --output") from error
            raise
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise ConfigError(f"the lock {path} is not a regular file; remove it or choose another --output")
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
            try:
                os.ftruncate(descriptor, 0)
                os.write(descriptor, str(os.getpid()).encode())
            except OSError:  # a full disk: the lock we hold is ours to remove
                os.unlink(path)
                os.close(descriptor)
                raise
            return descriptor
        os.close(descriptor)  # its last holder removed it as we opened it: lock the next one


@contextlib.contextmanager
def output_lock(output, folder=False):
    """Hold `output` (a file, or a `folder`) for this process while the block
    runs: a second run into the same output gets one line instead of
    replacing this run's files. The lock is the kernel's (flock) on a file
    beside the output that holds the PID, so it ends with the process,
    however the process ends; the file a killed run leaves is simply locked
    again. The folders made for it go again if they are still empty at the
    end (a failed run)."""
    from .errors import ConfigError

    refuse_dangling_link(output, itself=folder)  # a file output replaces a link at its own name
    path, made = lock_path(output, folder), []
    try:
        made = make_folders(path.parent)
        descriptor = _locked_descriptor(path)
    except OSError as error:
        remove_empty_folders(made)
        what = "the output directory" if folder else "the output"
        raise ConfigError(f"cannot write {what} {Path(output).resolve()} (its lock {path.name}: "
                          f"{error.strerror or error}); choose another --output") from error
    except ConfigError:
        remove_empty_folders(made)
        raise
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
        remove_empty_folders(made)


@contextlib.contextmanager
def probed_folder(folder, flag="--output"):
    """Make `folder` (and its missing parents) and write a file in it while
    the block runs, so that a folder that cannot take the output is one line
    before the work rather than after it; the folders made go again if they
    are still empty at the end."""
    import tempfile

    from .errors import ConfigError

    made = []
    try:
        made = make_folders(folder)
        descriptor, name = tempfile.mkstemp(prefix=".edge-resnet-probe-", dir=folder)
        os.close(descriptor)
        os.unlink(name)
    except OSError as error:
        remove_empty_folders(made)
        raise ConfigError(f"cannot write {folder}: {error.strerror or error}; choose another {flag}") from error
    try:
        yield
    finally:
        remove_empty_folders(made)


PREVIOUS_MARK = ".previous-"


def write_together(folder, contents):
    """Write {name: text} into `folder`, every file or none: each is written
    under a temporary name first (atomic_output); a file already at a name
    is kept (hard-linked, else copied) until every new one is in place, and
    comes back if one cannot be, where a name that held none is removed
    again. The names hold a whole file, old or new, at every moment. Returns
    the paths written."""
    folder = Path(folder)
    made = not folder.exists()
    remove_stale_previous(folder, contents)
    written, kept = {}, {}
    try:
        with contextlib.ExitStack() as stack:
            for name, text in contents.items():
                temporary = stack.enter_context(atomic_output(folder / name))
                temporary.write_text(text)
                written[name] = os.stat(temporary).st_ino  # the same file once it is published under `name`
            kept = kept_copies(folder, contents)
    except BaseException:
        put_back(folder, written, kept)
        if made:
            remove_empty_folders([folder])
        raise
    for previous in kept.values():
        previous.unlink(missing_ok=True)
    return [folder / name for name in contents]


def kept_copies(folder, names):
    """{name: a hard link (else a copy) of the file at it} for each of
    `names` already in `folder`, a link at a name kept as the link; all or
    none (ConfigError)."""
    import shutil

    from .errors import ConfigError

    kept = {}
    try:
        for name in names:
            path = folder / name
            if path.is_file() or path.is_symlink():
                previous = folder / f".{name}{PREVIOUS_MARK}{os.getpid()}"
                try:
                    os.link(path, previous, follow_symlinks=False)
                except OSError:  # no hard links here (FAT), or a file that takes none
                    shutil.copy2(path, previous, follow_symlinks=False)
                kept[name] = previous
    except OSError as error:
        put_back(folder, {}, kept)
        raise ConfigError(f"cannot keep {folder / name} while it is replaced: {error.strerror or error}; choose "
                          "another folder") from error
    except BaseException:
        put_back(folder, {}, kept)
        raise
    return kept


def put_back(folder, written, kept):
    """Undo write_together: each name that took the new file (`written`:
    {name: its inode}) gets its kept file back, or goes where it held none;
    the kept copies no name needs are removed."""
    for name, inode in written.items():
        path = folder / name
        with contextlib.suppress(OSError):
            if os.lstat(path).st_ino == inode:
                if name in kept:
                    os.replace(kept.pop(name), path)
                else:
                    path.unlink()
    for previous in kept.values():
        with contextlib.suppress(OSError):
            previous.unlink()


def remove_stale_previous(folder, names):
    """Remove the kept copies (kept_copies) a killed run left in `folder`."""
    for name in names:
        for previous in Path(folder).glob(f".{name}{PREVIOUS_MARK}*"):
            pid = previous.name.rsplit(PREVIOUS_MARK, 1)[1]
            if pid.isdigit() and not _process_alive(int(pid)):
                with contextlib.suppress(OSError):
                    previous.unlink()


@contextlib.contextmanager
def staged_output(output, force=False):
    """Lock `output`, then yield a staging folder (see open_staging) that is
    removed if the block fails; publish() it to finish."""
    import shutil

    with output_lock(output, folder=True):
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
    (Path(staging) / STAGING_MARKER).unlink(missing_ok=True)
    if not output.exists():
        with contextlib.suppress(OSError):  # mkdtemp's 0700 would make the output folder private
            os.chmod(staging, 0o777 & ~current_umask())
        os.replace(staging, output)
        return
    names = sorted(path.name for path in Path(staging).iterdir())
    check_publishable(output, names)
    refused = []
    for name in replaced:
        path = output / name if is_plain_name(name) else None
        if path is not None and name in names:  # this run writes it: replaced (a link there too), never followed
            continue
        if path is not None and path.is_file() and not path.is_symlink():
            path.unlink()
        elif path is None or path.exists() or path.is_symlink():
            refused.append(repr(name))
    if refused:
        warnings.warn(f"the earlier run's report lists {len(refused)} entries that are not plain files of {output}; "
                      f"left alone: {', '.join(refused[:5])}", UnsafeNameWarning, stacklevel=2)
    for name in sorted(names, key=lambda name: name in last):
        os.replace(Path(staging) / name, output / name)
    shutil.rmtree(staging, ignore_errors=True)


def check_publishable(output, names):
    """Refuse, before anything moves, a name in `output` that a file cannot
    replace (a folder sits there): publishing is all or nothing."""
    from .errors import ConfigError

    blocked = [name for name in names if (output / name).is_dir() and not (output / name).is_symlink()]
    if blocked:
        raise ConfigError(f"{output / blocked[0]} is a folder where this run writes a file"
                          + (f" ({len(blocked)} such names)" if len(blocked) > 1 else "")
                          + "; move it away or choose another --output")


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
    refuse_dangling_link(path, itself=kind == "directory")
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
