import json

import pytest

from dataeng_gym.envs.domains import make_domain
from dataeng_gym.envs.teacher import GenerationRequest, ProceduralTeacher
from dataeng_gym.export import COLUMNS, save_hf_dataset, write_pool_jsonl


@pytest.fixture(scope="module")
def samples():
    teacher = ProceduralTeacher(seed=3)
    return teacher.generate(make_domain("code"), GenerationRequest(0, "upper", 2, 30))


def test_pool_jsonl_has_the_paper_columns_and_provenance(tmp_path, samples):
    path = tmp_path / "best_pool.jsonl"
    write_pool_jsonl(path, samples, "code")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(samples) and set(rows[0]) == set(COLUMNS)
    assert rows[0]["instruction"] == samples[0].question
    assert rows[0]["output"] == samples[0].answer and rows[0]["input"] == ""
    assert rows[0]["digest"] == samples[0].digest and rows[0]["skill"] == "upper"
    assert "noise" not in rows[0]  # the hidden truth is not exported


def test_hf_dataset_round_trips(tmp_path, samples):
    datasets = pytest.importorskip("datasets")
    save_hf_dataset(tmp_path / "ds", samples, "code")
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert ds.column_names == list(COLUMNS) and len(ds) == len(samples)
    assert ds[5]["instruction"] == samples[5].question and ds[5]["output"] == samples[5].answer
    assert ds[5]["request_id"] == 0 and ds[5]["difficulty"] == 2
    empty = tmp_path / "empty"
    save_hf_dataset(empty, [], "code")  # an episode whose TRAINs never beat the base
    assert len(datasets.load_from_disk(str(empty))) == 0


def test_runner_exports_the_best_trains_pool(tmp_path):
    """A fast-twin variant whose TRAIN beats the base, so the best pool is not empty."""
    import dataclasses

    from dataeng_gym.envs.config import FAST
    from dataeng_gym.runner import RunnerConfig, make_specs, run_episodes

    datasets = pytest.importorskip("datasets")
    student = dataclasses.replace(FAST.student, max_train_steps=60, base_steps=300)
    specs = make_specs("x", ["weakest-skill"], ["finance"], [0], FAST.replace(student=student))
    (record,) = run_episodes(specs, tmp_path, RunnerConfig(export_dataset=True))
    summary = record["summary"]
    assert summary["final_public"] > summary["base_public"]  # a TRAIN beat the base
    ep = tmp_path / record["episode_dir"]
    rows = [json.loads(line) for line in (ep / "best_pool.jsonl").read_text().splitlines()]
    assert len(rows) == summary["best_pool_items"] > 0
    assert {r["domain"] for r in rows} == {"finance"} and all(r["teacher"] for r in rows)
    ds = datasets.load_from_disk(str(ep / "best_pool_dataset"))
    assert ds["instruction"] == [r["instruction"] for r in rows]
