import csv
import doctest
import json
import math

import pytest

from dataeng_gym import report
from dataeng_gym.cli import main
from dataeng_gym.errors import DataEngError
from dataeng_gym.report import mean_ci95, paired_ci95, pooled_paired_ci95, write_report
from dataeng_gym.results import EpisodeKey, make_record


def _summary(gain_abs, base=0.4, gap=0.02, teacher=1000, seconds=2.0):
    return {
        "base_private": base,
        "final_private": base + gain_abs,
        "gain_abs": gain_abs,
        "gain_rel": 100 * gain_abs / base,
        "public_private_gap": gap,
        "teacher_samples": teacher,
        "student_seconds": seconds,
        "base_public": 0.5,
        "train_publics": [0.55, 0.5 + gain_abs],
        "base_skill_public": {"a": 0.2, "b": 0.8},
        "final_skill_public": {"a": 0.2 + 2 * gain_abs, "b": 0.8},
        "env": "dataeng_gym/DataEng-v1",
    }


@pytest.fixture
def known_run(tmp_path):
    """Three seeds of 'good' on code (gains 0.10, 0.20, 0.30), two of 'bad' plus one failure."""
    records = [
        make_record(EpisodeKey("e", "good", "code", s), "ok", summary=_summary(g), episode_dir="x")
        for s, g in enumerate((0.10, 0.20, 0.30))
    ]
    records += [
        make_record(
            EpisodeKey("e", "bad", "code", s),
            "ok",
            summary=_summary(g, teacher=500),
            episode_dir="x",
        )
        for s, g in enumerate((0.0, -0.02))
    ]
    records.append(
        make_record(EpisodeKey("e", "bad", "code", 2), "failed", error="RuntimeError: boom")
    )
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def test_mean_ci95_uses_student_t():
    mean, ci = mean_ci95([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert ci == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert math.isnan(mean_ci95([1.0])[1])


def test_paired_ci95_pairs_by_key_and_cancels_a_shared_offset():
    seeds = {s: 10.0 * s for s in range(6)}  # wide spread across seeds, shared by both
    a = {s: v + 1.0 + 0.1 * (s % 2) for s, v in seeds.items()}
    mean, half, n = paired_ci95(a, {**seeds, 99: 0.0})
    assert n == 6 and mean == pytest.approx(1.05)
    assert half < 0.2 < mean_ci95(list(a.values()))[1]  # the seeds' spread cancels
    assert paired_ci95({1: 1.0}, {2: 1.0})[2] == 0


def test_pooled_paired_ci95_averages_the_runs_per_key_before_pairing():
    base = {s: 10.0 * s for s in range(8)}
    wobble = {s: (-1.0) ** s * 3.0 for s in base}  # each run alone: +-3 around +1 per seed
    up = {s: v + 1.0 + wobble[s] for s, v in base.items()}
    down = {s: v + 1.0 - wobble[s] for s, v in base.items()}
    mean, half, n = pooled_paired_ci95([up, {**down, 99: 5.0}], base)
    assert n == 8 and mean == pytest.approx(1.0) and half == pytest.approx(0.0)
    assert paired_ci95(up, base)[1] > 2.0  # one run alone is wide
    assert pooled_paired_ci95([up], base) == paired_ci95(up, base)
    assert pooled_paired_ci95([], base)[2] == 0


def test_report_doctests():
    result = doctest.testmod(report)
    assert result.attempted > 0 and result.failed == 0


def test_report_files_hold_the_right_numbers(known_run):
    paths = write_report(known_run)
    for key in ("md", "csv", "public_by_train", "skills"):
        assert paths[key].exists() and paths[key].stat().st_size > 0
    assert paths["public_by_train"].read_bytes()[:4] == b"\x89PNG"
    rows = {r["policy"]: r for r in csv.DictReader(paths["csv"].open())}
    good, bad = rows["good"], rows["bad"]
    assert (good["n"], good["failures"], bad["n"], bad["failures"]) == ("3", "0", "2", "1")
    assert float(good["gain_abs_points_mean"]) == pytest.approx(20.0)
    assert float(good["gain_abs_points_ci95"]) == pytest.approx(4.303 * 10 / math.sqrt(3), abs=1e-3)
    assert float(good["gain_rel_pct_mean"]) == pytest.approx(50.0)
    assert float(good["gap_points_mean"]) == pytest.approx(2.0)
    assert float(bad["gain_abs_points_mean"]) == pytest.approx(-1.0)
    assert float(bad["teacher_samples_mean"]) == 500
    text = paths["md"].read_text()
    assert "| good | code | 3 | +20.0 ± 24.8 | +50.0 ± 62.1 |" in text
    assert "**Best policy per domain** (highest mean private gain): code: good" in text
    assert "| bad | code | 2 | 1 | RuntimeError: boom |" in text
    assert "plots/public_by_train.png" in text


def test_report_cli_and_empty_run(known_run, tmp_path, capsys):
    assert main(["report", str(known_run)]) == 0
    assert "report.md" in capsys.readouterr().out
    (known_run / "report.md").unlink()
    assert main(["report", str(known_run / "results.jsonl")]) == 0  # the file names its run
    assert (known_run / "report.md").exists()
    with pytest.raises(DataEngError, match="no episode records"):
        write_report(tmp_path / "empty")
