"""Small file helpers: atomic writes, usable output places, content hashes.

Every file edgemlic writes goes through `atomic_path`, so a crash or a bad input never leaves a
half-written checkpoint, ONNX file or report where a good one stood, and a place that cannot be
written (read-only, full, a file where a folder should be) is one line naming the path and the cause.
Commands that work for minutes before they write call `check_output_folder` / `check_output_file`
first, so they fail before the work, not after.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgemlic.errors import EdgemlicError

_UMASK = os.umask(0)
os.umask(_UMASK)
_TEMP_SUFFIX = ".tmp"
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "a file is in the way of a folder",
    errno.ENAMETOOLONG: "the name is too long",
}
_WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def output_error(path: str | Path, error: OSError) -> EdgemlicError:
    """One line naming the place that cannot be written and why."""
    reason = _REASONS.get(error.errno or 0, error.strerror or str(error))
    return EdgemlicError(f"{path}: cannot write here ({reason}); nothing there was changed")


def make_folder(folder: str | Path) -> Path:
    """Create `folder` and its parents, or a one-line error naming why that is not possible."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EdgemlicError(f"{folder}: is a file, and a folder is needed here; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(folder, e) from None
    return folder


def check_output_folder(folder: str | Path) -> Path:
    """Make sure files can be created in `folder` (creating it), before any long work starts."""
    folder = make_folder(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgemlic-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise output_error(folder, e) from None
    return folder


def check_output_file(path: str | Path) -> Path:
    """Make sure `path` can be written as a file, before any long work starts."""
    path = Path(path)
    if path.is_dir():
        raise EdgemlicError(f"{path}: is a folder; give a file name")
    check_output_folder(path.parent)
    return path


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files of writers that were killed (their process no longer exists)."""
    with contextlib.suppress(OSError):
        for temp in folder.glob(f".*{_TEMP_SUFFIX}"):
            parts = temp.name.split(".")  # "", name..., pid, random, "tmp"
            if len(parts) >= 5 and parts[-3].isdigit() and not _alive(int(parts[-3])):
                temp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A failure to write the temporary file (or any write failure of the code writing it, such as a
    full disk) is one EdgemlicError naming `path`; what stood at `path` before is left as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise EdgemlicError(f"{path}: is a folder; give a file name")
    make_folder(path.parent)
    remove_stale_temporaries(path.parent)
    try:
        # The writer's pid in the name lets a later writer remove what a killed one left behind.
        prefix = f".{path.name}.{os.getpid()}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=_TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a written file gets the usual permissions
    except OSError as e:
        raise output_error(path, e) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        if e.errno in _WRITE_FAILURES or e.filename in (None, tmp, str(path)):
            raise output_error(path, e) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
