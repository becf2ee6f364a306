"""Durable results: atomic file writes and append-only JSONL that tolerates a torn last line."""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_default) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write a text file (a report, a table) atomically, as :func:`write_json` does."""
    write_bytes(path, text.encode())


def write_csv(
    path: str | Path, rows: Iterable[dict[str, Any]], fieldnames: Sequence[str], **kwargs: Any
) -> None:
    """Write rows as CSV atomically (``kwargs`` go to :class:`csv.DictWriter`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n", **kwargs)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def write_figure(path: str | Path, fig: Any, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically, in the format of the path's suffix."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip("."), **kwargs)
    write_bytes(path, buf.getvalue())


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file atomically: a reader sees the old file or the new one, never half of one.

    The temporary file is created as a plain ``open`` would create it (0666 less the umask,
    which the kernel applies), not with mkstemp's owner-only mode, so results on a shared file
    system stay readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def move_aside(path: str | Path, stamp: str) -> Path | None:
    """Rename an existing file to ``<stem>.earlier-<stamp><suffix>`` and return the new path.

    For a run that would overwrite an earlier run's results: they are kept, not lost to a rerun
    that then fails halfway.
    """
    path = Path(path)
    if not path.exists():
        return None
    moved = path.with_name(f"{path.stem}.earlier-{stamp}{path.suffix}")
    n = 1
    while moved.exists():  # two runs within one second: never overwrite the earlier copy
        n += 1
        moved = path.with_name(f"{path.stem}.earlier-{stamp}-{n}{path.suffix}")
    path.replace(moved)
    return moved


def keep_earlier(paths: Iterable[str | Path]) -> list[Path]:
    """:func:`move_aside` every existing file of ``paths`` under one time stamp; the new paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return [moved for path in paths if (moved := move_aside(path, stamp)) is not None]


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as one line, flushed; a crash can only tear the last line.

    After a torn last line the record starts a new line, so a resumed run's first record is not
    glued to the torn one and lost with it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=_default) + "\n"
    if _ends_torn(path):
        line = "\n" + line
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace a JSONL file by ``records`` atomically (a resumed run's kept records)."""
    lines = (json.dumps(r, sort_keys=True, default=_default) + "\n" for r in records)
    write_text(path, "".join(lines))


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a torn (partially written) line is skipped, never returned."""
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def changed_fields(
    path: str | Path, now: dict[str, Any], ignore: Iterable[str] = ()
) -> dict[str, tuple[Any, Any]] | None:
    """The top-level fields of the JSON file at ``path`` that differ from ``now``.

    Returns ``{field: (before, now)}``, both as JSON reads them (tuples as lists), skipping
    ``ignore``; None when there is no file. What a resumable run checks before it reuses what
    an earlier run in its directory left.
    """
    path = Path(path)
    if not path.exists():
        return None
    return json_changes(json.loads(path.read_text()), now, ignore)


def json_changes(
    before: dict[str, Any], now: dict[str, Any], ignore: Iterable[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """The top-level fields that differ, ``{field: (before, now)}``, skipping ``ignore``.

    Both go through JSON first, so a tuple equals the list a JSON file holds.
    """
    before = json.loads(json.dumps(before, default=_default))
    now = json.loads(json.dumps(now, default=_default))
    skip = set(ignore)
    return {
        k: (before.get(k), now.get(k))
        for k in sorted(before.keys() | now.keys())
        if k not in skip and before.get(k) != now.get(k)
    }


def _ends_torn(path: Path) -> bool:
    """Whether the file exists, is not empty and does not end with a newline."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars (a scalar's tolist is the number)
        return obj.tolist()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


json_default = _default
"""The ``default=`` of ``json.dumps`` used here: numpy scalars and arrays, sets and tuples."""
