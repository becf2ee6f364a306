"""Export an episode's curated data: the pool its best TRAIN trained on.

The curated data is what a user takes away to train other models, so it is saved in the
paper's ``instruction / input / output`` columns plus the provenance of each row (skill,
difficulty, teacher, request id, quality, verified flag, digest). Rows are in training order;
an item that a MIX weight of 2 repeated appears twice, as the student saw it. The hidden
``noise`` label of the procedural teacher is not exported (nothing downstream may rely on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dataeng_gym.envs.teacher import Sample
from dataeng_gym.errors import MissingExtraError
from dataeng_gym.io import write_jsonl

COLUMNS = (
    "instruction",
    "input",
    "output",
    "domain",
    "skill",
    "difficulty",
    "teacher",
    "request_id",
    "quality",
    "verified",
    "digest",
)


def pool_rows(samples: Sequence[Sample], domain: str) -> list[dict[str, Any]]:
    """One row per sample: question as ``instruction``, empty ``input``, answer as ``output``."""
    return [
        {
            "instruction": s.question,
            "input": "",
            "output": s.answer,
            "domain": domain,
            "skill": s.skill,
            "difficulty": s.difficulty,
            "teacher": s.teacher,
            "request_id": s.request_id,
            "quality": s.quality,
            "verified": s.verified,
            "digest": s.digest,
        }
        for s in samples
    ]


def write_pool_jsonl(path: str | Path, samples: Sequence[Sample], domain: str) -> None:
    """Write the rows as JSONL, atomically; needs no extra (the dataset holds the same rows)."""
    write_jsonl(path, pool_rows(samples, domain))


def save_hf_dataset(path: str | Path, samples: Sequence[Sample], domain: str) -> None:
    """Save the rows as a Hugging Face dataset (``datasets.load_from_disk(path)`` reads it)."""
    try:
        import datasets
    except ImportError as exc:
        raise MissingExtraError("datasets", "datasets") from exc
    rows = pool_rows(samples, domain)
    features = datasets.Features(
        {
            "instruction": datasets.Value("string"),
            "input": datasets.Value("string"),
            "output": datasets.Value("string"),
            "domain": datasets.Value("string"),
            "skill": datasets.Value("string"),
            "difficulty": datasets.Value("int32"),
            "teacher": datasets.Value("string"),
            "request_id": datasets.Value("int64"),
            "quality": datasets.Value("float32"),
            "verified": datasets.Value("bool"),
            "digest": datasets.Value("string"),
        }
    )
    data = {c: [r[c] for r in rows] for c in COLUMNS}
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a bar per episode would bury the runner's progress lines
    try:
        # one shard even when empty: datasets cannot load a dataset saved with zero shards
        datasets.Dataset.from_dict(data, features=features).save_to_disk(str(path), num_shards=1)
    finally:
        if not quiet:
            datasets.enable_progress_bars()
