"""File following (rotation, truncation, partial lines), multiline joining, parsing."""

from __future__ import annotations

from pathlib import Path

from monitoring.sdk.log_tail import FileFollower, MultilineJoiner, parse_line


def texts(lines: list) -> list[str]:  # type: ignore[type-arg]
    return [ln.text for ln in lines]


def test_follows_appends_partial_lines_rotation_and_truncation(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("old\n")
    f = FileFollower(str(p))  # starts at the end, like tail -F
    assert f.poll() == []
    with p.open("a") as h:
        h.write("one\ntw")
    assert texts(f.poll()) == ["one"]
    with p.open("a") as h:
        h.write("o\r\n")
    assert texts(f.poll()) == ["two"]
    with p.open("a") as h:
        h.write("last of old")  # no newline: still delivered when the file rotates
    p.rename(tmp_path / "a.log.1")
    p.write_text("new 1\n")
    assert texts(f.poll()) == ["last of old", "new 1"] and f.rotations == 1
    p.write_text("x\n")  # truncated (shorter) and rewritten
    assert texts(f.poll()) == ["x"] and f.truncations == 1
    f.close()


def test_missing_file_is_picked_up_from_its_start(tmp_path: Path) -> None:
    p = tmp_path / "later.log"
    f = FileFollower(str(p))
    assert f.poll() == []
    p.write_bytes(b"hello \xff\n")
    (line,) = f.poll()
    assert line.text == "hello \ufffd" and line.bad_utf8


def test_multiline_joins_stack_traces() -> None:
    j = MultilineJoiner()
    assert j.feed("ERROR boom") == []
    assert j.feed("Traceback (most recent call last):") == []
    assert j.feed('  File "x.py", line 1') == []
    assert j.feed("INFO next", bad_utf8=True) == [
        ('ERROR boom\nTraceback (most recent call last):\n  File "x.py", line 1', False)
    ]
    assert j.flush() == [("INFO next", True)] and j.flush() == []


def test_parse_plain_and_json_lines() -> None:
    assert parse_line("12:00 [WARNING] disk low")[:3] == ("WARNING", "12:00 [WARNING] disk low", 0)
    assert parse_line("no level here")[0] == ""
    lvl, msg, ts, logger, exc, attrs = parse_line(
        '{"level":"error","message":"failed","timestamp":"2024-01-01T00:00:00Z",'
        '"logger":"db","exception":"Trace","user":7,"ok":true}\n  more'
    )
    assert (lvl, msg, ts, logger) == ("error", "failed", 1_704_067_200_000, "db")
    assert exc == "Trace\n  more" and attrs == {"user": "7", "ok": "true"}
    assert parse_line('{"msg": "x", "ts": 1700000000.5}')[2] == 1_700_000_000_500
    assert parse_line("{not json")[1] == "{not json"
