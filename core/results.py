"""The durable results store of a run: one JSONL record per finished episode.

``RUN_DIR/results.jsonl`` is the source of truth of a run (W&B and reports are derived from it).
Each finished episode is appended as one line and fsynced as soon as it finishes, so a run
killed at any moment loses at most the episodes still in flight, and a torn last line is never
read as a record. Records are keyed by (experiment, policy, domain, seed):

- a rerun of the same command skips every key that already has an ``ok`` record;
- a key whose records are all ``failed`` is run again (failures are often transient);
- an episode delivered twice is stored once: the writer refuses a second ``ok`` record for a
  key, and the reader keeps the first ``ok`` record of a key even if a file was written by two
  processes at once.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dataeng_gym.io import append_jsonl, json_default, read_jsonl

RESULTS_FILE = "results.jsonl"

Status = Literal["ok", "failed"]


@dataclass(frozen=True, order=True)
class EpisodeKey:
    """Identity of an episode within a results store."""

    experiment: str
    policy: str
    domain: str
    seed: int

    def __str__(self) -> str:
        return f"{self.experiment}/{self.policy}/{self.domain}/{self.seed}"

    @classmethod
    def of(cls, record: dict[str, Any]) -> EpisodeKey:
        """The key of a record (or of any dict with the four key fields)."""
        return cls(
            str(record["experiment"]), str(record["policy"]), str(record["domain"]),
            int(record["seed"]),
        )  # fmt: skip


def make_record(
    key: EpisodeKey,
    status: Status,
    *,
    summary: dict[str, Any] | None = None,
    error: str | None = None,
    traceback: str | None = None,
    attempts: int = 1,
    episode_dir: str = "",
) -> dict[str, Any]:
    """A results record: the key fields, the outcome, and where the episode's files are.

    Args:
        key: The episode's identity.
        status: ``"ok"`` or ``"failed"``.
        summary: The summary ``run_episode`` returned (None for a failed episode).
        error: One line saying what went wrong (failed episodes).
        traceback: The Python traceback of the error, when there was one.
        attempts: How many times the episode was started (more than 1 after a worker died).
        episode_dir: The episode's directory, relative to the run directory.
    """
    if status not in ("ok", "failed"):
        raise ValueError(f"status must be 'ok' or 'failed', got {status!r}")
    return {
        "experiment": key.experiment,
        "policy": key.policy,
        "domain": key.domain,
        "seed": key.seed,
        "status": status,
        "summary": summary,
        "error": error,
        "traceback": traceback,
        "attempts": attempts,
        "episode_dir": episode_dir,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """One record per key, in first-seen order: the first ``ok`` one, else the last ``failed``.

    ``path`` is a results file or a run directory; a missing file reads as no records.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        return []
    best: dict[EpisodeKey, dict[str, Any]] = {}
    for record in read_jsonl(path):
        try:
            key = EpisodeKey.of(record)
        except (KeyError, TypeError, ValueError):
            continue  # not a record of ours: skipped, like a torn line
        old = best.get(key)
        if old is None or old["status"] != "ok":
            best[key] = record
    return list(best.values())


class ResultsStore:
    """Appends episode records to ``RUN_DIR/results.jsonl``; knows which keys are done."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_FILE
        self._records = {EpisodeKey.of(r): r for r in read_results(self.path)}
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as f:  # a torn last line (a killed writer) is closed,
                f.seek(-1, 2)  # so that the next record starts on a line of its own
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def done(self) -> set[EpisodeKey]:
        """Keys with an ``ok`` record: a rerun skips them."""
        return {k for k, r in self._records.items() if r["status"] == "ok"}

    def add(self, record: dict[str, Any]) -> bool:
        """Append ``record`` durably; False (and nothing written) if its key is already ok."""
        key = EpisodeKey.of(record)
        if key in self.done():
            return False
        append_jsonl(self.path, record)
        self._records[key] = json.loads(json.dumps(record, default=json_default))  # as read back
        return True

    def records(self) -> list[dict[str, Any]]:
        """The current record of every key (see :func:`read_results`)."""
        return list(self._records.values())
