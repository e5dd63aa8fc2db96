import os

import pytest

from fva.atomic import atomic_path, write_json


def test_atomic_write_has_normal_permissions_and_leaves_no_temp(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"a": 1.0})
    mode = os.stat(target).st_mode & 0o777
    assert mode & 0o044, f"results must be readable by others per umask, got {oct(mode)}"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "history.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]
