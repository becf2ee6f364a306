import json
import os
import stat

import numpy as np

from dataeng_gym.io import (
    append_jsonl,
    changed_fields,
    json_default,
    keep_earlier,
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
    write_text(path, "later\n")  # a second run within the same stamp keeps both copies
    again = move_aside(path, "t1")
    assert again == tmp_path / "bench.earlier-t1-2.json" and again.read_text() == "later\n"
    assert moved.read_text() == "earlier\n"


def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path):
    # mkstemp makes owner-only files; results on a shared file system must stay readable.
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    for write in (write_text, write_jsonl):
        path = tmp_path / f"{write.__name__}.out"
        write(path, "x" if write is write_text else [{"a": 1}])
        assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_json_default_writes_numpy_arrays_and_scalars():
    obj = {"a": np.array([[1, 2]]), "b": np.array([0.5]), "c": np.float32(0.25), "d": (1, 2)}
    assert json.loads(json.dumps(obj, default=json_default)) == {
        "a": [[1, 2]],
        "b": [0.5],
        "c": 0.25,
        "d": [1, 2],
    }


def test_write_jsonl_replaces_a_file_with_a_torn_line(tmp_path):
    path = tmp_path / "nodes.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as f:
        f.write('{"a": 2')
    write_jsonl(path, [{"a": 1}, {"b": [1, 2]}])
    assert list(read_jsonl(path)) == [{"a": 1}, {"b": [1, 2]}]
    write_jsonl(path, [])
    assert path.read_text() == ""


def test_changed_fields_compares_as_json_reads_and_skips_what_may_change(tmp_path):
    path = tmp_path / "args.json"
    assert changed_fields(path, {"seed": 0}) is None  # no earlier run
    run = {"seed": 0, "domains": ("code",), "episodes": 20}
    write_json(path, run)
    assert changed_fields(path, run | {"episodes": 40}, ["episodes"]) == {}
    assert changed_fields(path, run | {"seed": 1}) == {"seed": (0, 1)}
    assert changed_fields(path, {"seed": 0, "episodes": 20}) == {"domains": (["code"], None)}


def test_keep_earlier_moves_the_files_that_exist_under_one_stamp(tmp_path):
    write_text(tmp_path / "bench.json", "{}\n")
    write_text(tmp_path / "bench.md", "table\n")
    moved = keep_earlier(tmp_path / f"bench.{x}" for x in ("json", "md", "csv"))
    assert [p.suffix for p in moved] == [".json", ".md"]
    assert moved[0].stem.split(".earlier-")[1] == moved[1].stem.split(".earlier-")[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in moved)
