import os
import stat

import pytest

from rltuner.errors import RLTunerError
from rltuner.fileio import atomic_path, ensure_writable_dir, nan_to_null, write_json_atomic, write_text_atomic


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second")
    assert target.read_text() == "second"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temporary left behind


def test_interrupted_write_keeps_previous_content(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise KeyboardInterrupt
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_a_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(RLTunerError, match="not writable"):
        ensure_writable_dir(locked)


def test_output_under_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RLTunerError, match="cannot write"):
        write_text_atomic(blocker / "out.txt", "y")
    with pytest.raises(RLTunerError, match="not writable"):
        ensure_writable_dir(blocker / "sub")


def test_nan_to_null_makes_nested_nan_valid_json(tmp_path):
    obj = {"a": float("nan"), "b": [1.0, float("nan"), (2, float("nan"))], "c": {"d": float("nan"), "e": "x"}}
    assert nan_to_null(obj) == {"a": None, "b": [1.0, None, [2, None]], "c": {"d": None, "e": "x"}}
    path = write_json_atomic(tmp_path / "x.json", nan_to_null(obj))
    assert "NaN" not in path.read_text()
