"""Reading and writing files for every tool: all-or-nothing writes, and JSON lines with file:line errors.

Writes never leave a half-written file: each goes to a hidden temporary beside its target (same file
system, so `os.replace` is atomic), named by process so that a later run can tell a killed run's leftovers
(`remove_stale_temporaries`) from a running one's. A plain open, not tempfile, gives files the umask's
permissions (tempfile's 0600 would hide them from collaborators on shared storage).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from med_rlvr_plugin.cli import ToolError


def _temporary(path: Path, backup: bool = False) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{'.bak' if backup else ''}.tmp")


def remove_stale_temporaries(path: Path) -> list[str]:
    """Remove the temporaries a killed run left beside `path` (its name, a process id that no longer runs)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)(?:\.bak)?\.tmp")
    removed = []
    for candidate in sorted(path.parent.iterdir()):
        match = pattern.fullmatch(candidate.name)
        if not match:
            continue
        pid = int(match[1])
        if pid != os.getpid():
            try:
                os.kill(pid, 0)  # signal 0 only asks whether the process exists
                continue  # it runs, and may be writing this file now
            except PermissionError:
                continue  # it runs, as another user
            except ProcessLookupError:
                pass
        candidate.unlink(missing_ok=True)
        removed.append(str(candidate))
    return removed


def check_writable(path: Path) -> None:
    """Find an unwritable output before the work, not after it: create the folder and a probe file there,
    which is what the write will do (os.access misleads for root and read-only file systems)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder stands there")
        probe = _temporary(path)
        probe.open("w").close()
        probe.unlink()
    except OSError as error:
        reason = error.strerror or error
        raise ToolError(
            f"cannot write {path}: {reason}; choose another path or fix the folder's permissions"
        ) from None


def write_together(files: Mapping[str | os.PathLike, Iterable[str] | bytes]) -> None:
    """Write every file or none: each to its temporary, then, once all are complete, each into place with
    os.replace; a replacement that fails puts back the files already replaced (from hard links to the old
    ones). A file's content is text chunks, or bytes (a parquet file, a PNG). Missing folders are created.
    """
    contents = {Path(path): content for path, content in files.items()}
    temporaries = {path: _temporary(path) for path in contents}
    backups: dict[Path, Path] = {}
    replaced: list[Path] = []
    try:
        for path, chunks in contents.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(chunks, bytes):
                temporaries[path].write_bytes(chunks)
                continue
            with open(temporaries[path], "w", encoding="utf-8") as handle:
                handle.writelines(chunks)
        for path in temporaries:
            if path.exists() or path.is_symlink():
                backups[path] = _temporary(path, backup=True)
                try:
                    os.link(path, backups[path], follow_symlinks=False)
                except OSError:  # a file system without hard links
                    shutil.copyfile(path, backups[path], follow_symlinks=False)
            os.replace(temporaries[path], path)
            replaced.append(path)
    except BaseException:
        for path in replaced:
            if path in backups:
                os.replace(backups.pop(path), path)
            else:
                path.unlink(missing_ok=True)
        for leftover in [*temporaries.values(), *backups.values()]:
            leftover.unlink(missing_ok=True)
        raise
    for backup in backups.values():
        backup.unlink()


def write_new(path: Path, text: str) -> None:
    """Write `text` atomically and never over an existing file (a hard link from the finished temporary):
    FileExistsError when another writer got there first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary(path)
    try:
        temporary.write_text(text, encoding="utf-8")
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def png_bytes(figure, dpi: int) -> bytes:
    """A matplotlib figure as PNG bytes, closed; for `write_together`, so a plot is written whole or not at all."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def read_jsonl(
    path: Path,
    fix: str,
    on_cut: Callable[[str], None] | None = None,
    on_bad: Callable[[str, str], None] | None = None,
) -> Iterator[tuple[str, object]]:
    """(`path:line`, value) for each non-blank line of a JSON-lines file; ToolError naming the file and line,
    then `fix` (what to do), for a line that is not UTF-8 or not JSON.

    With `on_cut`, a last line without its newline that is not JSON (its writer stopped mid-line) is passed
    to it by location and skipped, instead of being an error. With `on_bad`, any other such line is passed
    to it with the reason and skipped. Lines are read and decoded one at a time: memory holds one line.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                reason = f"not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
            else:
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    if on_cut and not raw.endswith(b"\n"):
                        on_cut(where)
                        return
                    reason = f"not JSON ({error.msg})"
                else:
                    yield where, value
                    continue
            if on_bad is None:
                raise ToolError(f"{where}: {reason}; {fix}")
            on_bad(where, reason)
