import json

import pytest

from dataeng_gym.results import EpisodeKey, ResultsStore, make_record, read_results

KEY = EpisodeKey("exp", "uniform", "code", 0)


def _ok(key=KEY, gain=0.1):
    return make_record(key, "ok", summary={"gain_abs": gain}, episode_dir="episodes/x")


def test_duplicate_delivery_is_stored_once(tmp_path):
    store = ResultsStore(tmp_path)
    assert store.add(_ok()) is True
    assert store.add(_ok(gain=0.2)) is False
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1
    assert ResultsStore(tmp_path).add(_ok(gain=0.3)) is False  # a fresh writer knows it too


def test_reader_keeps_the_first_ok_record_of_a_key_written_twice(tmp_path):
    path = tmp_path / "results.jsonl"
    failed = make_record(KEY, "failed", error="boom")
    lines = [failed, _ok(gain=0.1), _ok(gain=0.2), _ok(EpisodeKey("exp", "random", "code", 0))]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    records = read_results(tmp_path)
    assert [(r["policy"], r["status"]) for r in records] == [("uniform", "ok"), ("random", "ok")]
    assert records[0]["summary"]["gain_abs"] == 0.1
    assert ResultsStore(tmp_path).done() == {KEY, EpisodeKey("exp", "random", "code", 0)}


def test_a_failed_key_can_be_finished_later(tmp_path):
    store = ResultsStore(tmp_path)
    store.add(make_record(KEY, "failed", error="boom", traceback="Traceback ..."))
    assert store.done() == set()
    assert store.add(_ok()) is True
    assert [r["status"] for r in read_results(tmp_path)] == ["ok"]


def test_a_partially_written_record_is_never_read(tmp_path):
    path = tmp_path / "results.jsonl"
    whole = json.dumps(_ok()) + "\n"
    torn = json.dumps(_ok(EpisodeKey("exp", "random", "code", 1)))[:40]
    path.write_text(whole + torn)
    assert [r["policy"] for r in read_results(path)] == ["uniform"]
    store = ResultsStore(tmp_path)
    assert store.done() == {KEY}
    later = EpisodeKey("exp", "random", "code", 2)
    assert store.add(_ok(later))  # appended after the torn line, not glued to it
    assert [EpisodeKey.of(r) for r in read_results(path)] == [KEY, later]


def test_record_fields_and_bad_status():
    record = make_record(KEY, "failed", error="x", attempts=3, episode_dir="episodes/a")
    assert {"experiment", "policy", "domain", "seed", "status", "summary", "error", "traceback",
            "attempts", "episode_dir", "finished_at"} == set(record)  # fmt: skip
    assert EpisodeKey.of(record) == KEY and str(KEY) == "exp/uniform/code/0"
    with pytest.raises(ValueError, match="'ok' or 'failed'"):
        make_record(KEY, "done")  # type: ignore[arg-type]
