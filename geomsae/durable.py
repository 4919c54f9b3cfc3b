"""Writes that survive a kill and a power cut: temporary name, fsync, rename, fsync of the folder.

A file or folder that exists under its final name is complete: its bytes were flushed to
disk (``os.fsync``) before ``os.replace`` moved it into place, and the folder holding it
was flushed after the rename, so the rename itself is on disk too. Every file is created
with the ordinary mode (0o666 less the umask), whichever way its bytes were produced.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"
"""Prefix of every temporary name; what a killed writer leaves behind starts with it."""


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's data and metadata to disk (a no-op where folders cannot be opened)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except (IsADirectoryError, PermissionError):  # Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file under the folder ``path``, then the folders themselves (deepest first)."""
    root = Path(path)
    for dirpath, _, files in os.walk(root, topdown=False):
        for f in files:
            fsync_path(Path(dirpath) / f)
        fsync_path(dirpath)


def replace(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """fsync ``tmp`` (a file or a whole folder), rename it to ``final``, fsync the parent folder."""
    tmp, final = Path(tmp), Path(final)
    if tmp.is_dir():
        fsync_tree(tmp)
    else:
        fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


def tmp_name(path: str | os.PathLike) -> Path:
    """The temporary name ``path`` is written under (same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}")


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` durably and atomically; returns the path."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a quota: no torn temporary left, and the error names the file
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    fsync_path(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` durably and atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **kw: Any) -> Path:
    """``json.dumps(obj, **kw)`` + newline to ``path`` durably and atomically; returns the path."""
    return write_text(path, json.dumps(obj, **kw) + "\n")


def check_file_out(path: str | os.PathLike, what: str) -> Path:
    """Raise ValueError when the output file ``path`` is an existing folder or its folder is a file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is an existing folder, not a file name")
    if path.parent != path and path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"{what} {str(path)!r}: {str(path.parent)!r} is a file, not a folder")
    return path


def check_new_file(path: str | os.PathLike, what: str, *, overwrite: bool = False,
                   inputs: tuple[str | os.PathLike | None, ...] = ()) -> Path:
    """:func:`check_file_out`; then ValueError when ``path`` is one of the command's ``inputs`` (always), or exists
    and ``overwrite`` is False: an output never replaces what the user did not ask to replace."""
    path = check_file_out(path, what)
    target = path.resolve()
    for src in inputs:
        if src is not None and Path(src).exists() and Path(src).resolve() == target:
            raise ValueError(f"{what} {str(path)!r} is the file this command reads ({str(src)!r}): choose another name")
    if path.exists() and not overwrite:
        raise ValueError(f"{what} {str(path)!r} already exists: choose another name, or pass --overwrite to replace it")
    return path


def save_npy(path: str | os.PathLike, array: Any) -> Path:
    """``np.save`` durably and atomically (a kill leaves the old file or none, never a torn one); returns the path."""
    import numpy as np  # numpy only when an array is written: the CLI's start-up imports this module

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def check_out_folder(out: str | os.PathLike, what: str = "--out") -> Path:
    """Raise ValueError when ``out`` exists but is not a folder (before any work is done)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{what} {str(out)!r} is an existing file, not a folder: choose a folder name")
    if any(p.exists() and not p.is_dir() for p in out.parents):
        bad = next(p for p in reversed(out.parents) if p.exists() and not p.is_dir())
        raise ValueError(f"{what} {str(out)!r}: {str(bad)!r} is a file, not a folder")
    return out


LOCK_FILE = ".geomsae.lock"
"""The lock file a writer holds inside its run folder (:func:`folder_lock`)."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "this run") -> Iterator[Path]:
    """Hold ``folder`` for one writer: a second process (or a second open in this one) that asks for the same folder
    gets ValueError naming the holder's pid instead of mixing its files with the first's. The lock is an exclusive
    ``flock`` on ``folder/.geomsae.lock``, so the kernel releases it when the holder dies (no stale locks after a
    kill); where ``fcntl`` does not exist (Windows) nothing is locked. The folder is created if missing, and removed
    again if the writer left nothing in it."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # pragma: no cover (not POSIX)
        yield folder
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise ValueError(f"{str(folder)!r} is in use by another writer (pid {holder}, {what}): wait until it ends, "
                             "or choose another folder") from None
        before = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if before:  # a lock file left by a writer that died: its flock went with it
            print(f"geomsae: {str(folder)!r} was locked by pid {before}, no longer running: taking it over",
                  file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield folder
        finally:
            path.unlink(missing_ok=True)
            if created and not any(folder.iterdir()):
                folder.rmdir()
    finally:
        os.close(fd)
