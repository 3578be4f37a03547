"""evidence.unique: one image, one row, whatever path reaches it; paths outside the data folder refused."""
from __future__ import annotations

import hashlib
import os

import pytest

from evidence import unique


@pytest.fixture
def tree(tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "x.dcm").write_bytes(b"image x")
    (data / "a" / "y.dcm").write_bytes(b"image y")
    (data / "copy.dcm").write_bytes(b"image x")                 # same bytes, another name
    os.symlink(data / "a" / "x.dcm", data / "link.dcm")          # another path to x
    os.symlink(data, data / "a" / "loop")                        # a symlink loop
    (tmp_path / "secret.dcm").write_bytes(b"outside")
    os.symlink(tmp_path / "secret.dcm", data / "out.dcm")        # a symlink pointing out
    return data


def test_every_path_to_one_image_is_one_item(tree):
    names = ["a/x.dcm", "./a/x.dcm", "a//x.dcm", "a/loop/a/x.dcm", "link.dcm", "a/../a/x.dcm", "copy.dcm", "a/y.dcm"]
    items = [unique.item(i + 2, n, unique.resolve_in(tree, n), 1) for i, n in enumerate(names)]
    kept, duplicates, conflicts = unique.group(items)
    assert [it.name for it in kept] == ["a/x.dcm", "a/y.dcm"] and conflicts == []
    assert [(d.item.name, d.first.key, d.how) for d in duplicates] == [
        ("./a/x.dcm", 2, unique.SAME_FILE), ("a//x.dcm", 2, unique.SAME_FILE), ("a/loop/a/x.dcm", 2, unique.SAME_FILE),
        ("link.dcm", 2, unique.SAME_FILE), ("a/../a/x.dcm", 2, unique.SAME_FILE), ("copy.dcm", 2, unique.SAME_CONTENT)]
    assert kept[0].sha256 == hashlib.sha256(b"image x").hexdigest()
    assert "same content as line 2 (a/x.dcm)" in duplicates[-1].detail("line")


def test_one_image_with_two_labels_is_a_conflict_naming_both_rows(tree):
    items = [unique.item(2, "a/x.dcm", tree / "a/x.dcm", 1), unique.item(5, "copy.dcm", tree / "copy.dcm", 0)]
    kept, duplicates, conflicts = unique.group(items)
    assert len(kept) == 1 and duplicates == [] and len(conflicts) == 1
    message = unique.conflict_message(conflicts[0], "labels.csv")
    assert message.startswith("labels.csv: row 2 (a/x.dcm, label 1) and row 5 (copy.dcm, label 0) are one image "
                              "(same content, sha256 ")
    assert "\n" not in message


@pytest.mark.parametrize("name", ["../secret.dcm", "a/../../secret.dcm", "./../secret.dcm", "ABS"])
def test_paths_outside_the_folder_are_refused_unless_allowed(tree, name):
    name = str(tree.parent / "secret.dcm") if name == "ABS" else name
    with pytest.raises(unique.OutsideFolderError) as e:
        unique.resolve_in(tree, name, where="labels.csv: line 3")
    text = str(e.value)
    assert text.startswith(f"labels.csv: line 3: {name!r} resolves to {tree.parent / 'secret.dcm'}, outside the data folder")
    assert "--allow-outside" in text
    assert unique.resolve_in(tree, name, allow_outside=True) == (tree.parent / "secret.dcm").resolve()


def test_dedupe_paths_keeps_the_first_name_in_order(tree):
    kept, duplicates = unique.dedupe_paths([tree / "a/y.dcm", tree / "link.dcm", tree / "a/x.dcm", tree / "copy.dcm"])
    assert kept == [tree / "a/y.dcm", tree / "link.dcm"]
    assert [(d.item.name, d.first.name) for d in duplicates] == [
        (str(tree / "a/x.dcm"), str(tree / "link.dcm")), (str(tree / "copy.dcm"), str(tree / "link.dcm"))]


def test_a_symlink_placed_in_the_folder_is_followed(tree):
    assert unique.resolve_in(tree, "out.dcm") == (tree.parent / "secret.dcm").resolve()
    assert unique.resolve_in(tree, "a/../a/x.dcm") == (tree / "a" / "x.dcm").resolve()
    assert not unique.leads_outside("a/..") and unique.leads_outside("a/../..")
