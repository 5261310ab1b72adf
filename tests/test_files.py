"""files.py, the one place every tool reads JSON lines and writes its outputs (the write-all-or-nothing
cases of `write_together` are in tests/test_data.py, where prepare uses it)."""

import os

import pytest

from med_rlvr_plugin.cli import ToolError
from med_rlvr_plugin.files import read_jsonl, write_new, write_together


def test_read_jsonl_names_file_and_line_and_skips_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n[2]\n{"b": \n', encoding="utf-8")
    rows = read_jsonl(path, "FIX")
    assert next(rows) == (f"{path}:1", {"a": 1}) and next(rows) == (f"{path}:4", [2])
    with pytest.raises(ToolError, match=rf"^{path}:5: not JSON \(Expecting value\); FIX$"):
        next(rows)


def test_read_jsonl_finds_the_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 3000 + '{"a": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(ToolError, match=rf"^{path}:3001: not UTF-8 \(byte 0xe9 at column 11\); FIX$"):
        list(read_jsonl(path, "FIX"))


def test_read_jsonl_reports_a_cut_last_line_only_when_asked(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text('{"a": 1}\n{"a": 2', encoding="utf-8")
    cut = []
    assert [value for _, value in read_jsonl(path, "FIX", on_cut=cut.append)] == [{"a": 1}]
    assert cut == [f"{path}:2"]
    with pytest.raises(ToolError, match=":2: not JSON"):
        list(read_jsonl(path, "FIX"))


def test_write_together_creates_folders_and_write_new_never_overwrites(tmp_path):
    target = tmp_path / "new" / "folder" / "report.md"
    write_together({target: ["a\n", "b\n"], target.with_suffix(".png"): b"\x89PNG"})
    assert target.read_text() == "a\nb\n" and target.with_suffix(".png").read_bytes() == b"\x89PNG"
    manifest = tmp_path / "manifest.json"
    write_new(manifest, "first\n")
    with pytest.raises(FileExistsError):
        write_new(manifest, "second\n")
    assert manifest.read_text() == "first\n"
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "new"], "no temporary is left behind"
