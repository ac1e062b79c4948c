"""The blob store over fsspec: a local folder and memory, written whole or not at all."""

from __future__ import annotations

import pytest

from llmcell.batch.blobs import Blobs


@pytest.fixture(params=["local", "memory"])
def blobs(request, tmp_path):
    return Blobs(str(tmp_path / "files") if request.param == "local"
                 else f"memory://llmcell-test-{id(request)}")


def test_a_blob_is_written_read_by_lines_and_deleted(blobs):
    assert blobs.put("file-a", [b'{"x": 1}\n', b'{"x"', b': 2}\r\n', b"last"]) == 23
    assert b"".join(blobs.read("file-a")) == b'{"x": 1}\n{"x": 2}\r\nlast'
    assert list(blobs.lines("file-a")) == [b'{"x": 1}', b'{"x": 2}', b"last"]
    blobs.delete("file-a")
    assert not blobs.exists("file-a")
    with pytest.raises(FileNotFoundError):
        list(blobs.read("file-a"))


def test_a_writer_that_fails_midway_leaves_the_old_blob_and_no_partial_one(blobs):
    blobs.put("file-b", [b"old\n"])

    def failing():
        yield b"new, half of it"
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        blobs.put("file-b", failing())
    assert b"".join(blobs.read("file-b")) == b"old\n"
    assert [p for p in blobs.fs.ls(blobs.root, detail=False) if "partial" in p] == []


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden"])
def test_names_that_are_not_plain_file_names_are_refused(blobs, name):
    with pytest.raises(ValueError, match="plain file name"):
        blobs.put(name, [b"x"])


def test_an_unknown_storage_scheme_names_the_url():
    with pytest.raises(ValueError, match="nosuch://bucket"):
        Blobs("nosuch://bucket/prefix")
