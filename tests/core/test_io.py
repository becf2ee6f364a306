import json

from dataeng_gym.io import (
    append_jsonl,
    move_aside,
    read_jsonl,
    write_json,
    write_jsonl,
    write_text,
)


def test_torn_last_line_is_never_read_as_a_record(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"a": 1})
    append_jsonl(path, {"a": 2})
    with open(path, "a") as f:
        f.write('{"a": 3, "b"')  # a crash mid-write
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 2}]


def test_a_record_appended_after_a_torn_line_is_read(tmp_path):
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as f:
        f.write('{"a": 2, "b"')  # a crash mid-write, then the run resumes
    append_jsonl(path, {"a": 3})
    append_jsonl(path, {"a": 4})
    assert list(read_jsonl(path)) == [{"a": 1}, {"a": 3}, {"a": 4}]


def test_write_json_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    write_json(path, {"x": 1})
    write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_move_aside_keeps_an_earlier_file_under_a_new_name(tmp_path):
    path = tmp_path / "bench.json"
    assert move_aside(path, "t0") is None  # nothing to keep
    write_text(path, "earlier\n")
    moved = move_aside(path, "t1")
    assert moved == tmp_path / "bench.earlier-t1.json" and moved.read_text() == "earlier\n"
    assert not path.exists()


def test_write_jsonl_replaces_a_file_with_a_torn_line(tmp_path):
    path = tmp_path / "nodes.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as f:
        f.write('{"a": 2')
    write_jsonl(path, [{"a": 1}, {"b": [1, 2]}])
    assert list(read_jsonl(path)) == [{"a": 1}, {"b": [1, 2]}]
    write_jsonl(path, [])
    assert path.read_text() == ""
