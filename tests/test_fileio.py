"""neuromamba.fileio: atomic writes leave either the complete new file or the old state."""
import os

import pytest

from neuromamba import fileio


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if fileio.TMP_MARKER in p.name)


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "out.bin"  # missing folder is created
    with fileio.atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith("out.bin" + fileio.TMP_MARKER + str(os.getpid()))
        assert not target.exists()  # nothing visible before the block ends
        tmp.write_bytes(b"abc")
    assert target.read_bytes() == b"abc"
    assert _leftovers(target.parent) == []


def test_exception_leaves_no_temporary_and_no_target(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="writer failed"):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_untouched_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old content")
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("new content")
            raise KeyboardInterrupt
    assert target.read_text() == "old content"
    assert _leftovers(tmp_path) == []


def test_writer_that_never_creates_the_temporary(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(ValueError):
        with fileio.atomic_path(target):
            raise ValueError("failed before writing anything")
    assert list(tmp_path.iterdir()) == []


def test_keep_suffix_ends_with_all_suffixes(tmp_path):
    with fileio.atomic_path(tmp_path / "img.nii.gz", keep_suffix=True) as tmp:
        assert tmp.name.endswith(".nii.gz")
        assert tmp.name.startswith("img.nii.gz" + fileio.TMP_MARKER)
        tmp.write_bytes(b"x")
    assert (tmp_path / "img.nii.gz").read_bytes() == b"x"


def test_temporary_names_are_unique(tmp_path):
    names = {fileio.temporary_name(tmp_path / "a.h5") for _ in range(50)}
    assert len(names) == 50


def test_write_text_and_bytes_replace_existing(tmp_path):
    target = tmp_path / "t.csv"
    target.write_text("old")
    assert fileio.atomic_write_text(target, "a,b\r\n1,2\r\n", newline="") == target
    assert target.read_bytes() == b"a,b\r\n1,2\r\n"
    assert fileio.atomic_write_text(str(target), "é\n") == target
    assert target.read_bytes() == "é\n".encode("utf-8")
    fileio.atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _leftovers(tmp_path) == []


def test_data_checker_recognises_leftover_temporaries(tmp_path):
    from neuromamba.data import check, store

    assert store.TMP_MARKER == fileio.TMP_MARKER
    leftover = fileio.temporary_name(tmp_path / "rest.h5")
    leftover.write_bytes(b"")
    assert [p.name for p in check.candidate_files(tmp_path)] == [leftover.name]
    result = check.check_run(leftover)
    assert not result.ok and "temporary file" in result.message
    store.remove_stale_temporaries(tmp_path / "rest.h5")
    assert not leftover.exists()
