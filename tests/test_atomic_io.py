"""atomic_dir / atomic_path: all-or-nothing writes that never replace what the caller does not own."""

from __future__ import annotations

import pytest

from knowpack.errors import KnowpackError
from knowpack.io import atomic_dir, atomic_path, check_replaceable


def _fill(folder, text="new"):
    (folder / "a.txt").write_text(text)


def test_new_and_empty_folders_are_written(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        _fill(tmp)
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as tmp:
        _fill(tmp)
    assert (tmp_path / "out" / "a.txt").read_text() == (tmp_path / "empty" / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "out"]


def test_a_non_empty_folder_is_refused_by_default_before_any_work(tmp_path):
    target = tmp_path / "user"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    ran = []
    with pytest.raises(KnowpackError, match="refusing to replace"):
        with atomic_dir(target):
            ran.append(1)
    assert ran == [] and (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]


def test_replace_true_or_a_recogniser_replaces_the_callers_own_folder(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    _fill(target, "old")
    with atomic_dir(target, replace=True) as tmp:
        _fill(tmp, "v2")
    assert (target / "a.txt").read_text() == "v2"
    ours = lambda path: (path / "a.txt").read_text().startswith("v")  # noqa: E731
    with atomic_dir(target, replace=ours) as tmp:
        _fill(tmp, "other")
    assert (target / "a.txt").read_text() == "other"
    with pytest.raises(KnowpackError):
        check_replaceable(target, ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no set-aside folder left


def test_a_failing_writer_leaves_the_old_folder(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    _fill(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, replace=True) as tmp:
            _fill(tmp)
            raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_a_folder_appearing_during_the_work_is_not_clobbered(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(KnowpackError, match="refusing to replace"):
        with atomic_dir(target) as tmp:
            _fill(tmp)
            target.mkdir()
            (target / "theirs.txt").write_text("theirs")
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]


def test_never_replaced_even_with_replace_true(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "other")
    monkeypatch.chdir(tmp_path / "real")
    for target, message in [(tmp_path / "file", "a file of that name"), (tmp_path / "link", "symbolic link"),
                            (tmp_path / "real", "current folder"), (tmp_path, "current folder")]:
        with pytest.raises(KnowpackError, match=message):
            check_replaceable(target, True)
    assert (tmp_path / "file").read_text() == "x"


def test_atomic_path_refuses_a_folder_and_a_file_parent(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(KnowpackError, match="a folder of that name exists"):
        with atomic_path(tmp_path / "out.json"):
            pass
    (tmp_path / "plain").write_text("x")
    with pytest.raises(KnowpackError, match="parent path is a file"):
        with atomic_path(tmp_path / "plain" / "out.json"):
            pass


def test_atomic_files_get_the_mode_of_a_plain_write(tmp_path):
    """mkstemp's 0600 would hide results and reports from everyone else sharing the folder."""
    import os
    import stat

    from knowpack.io import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
        os.umask(0o077)
        write_text(tmp_path / "b.txt", "x")
        assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600
    finally:
        os.umask(old)
