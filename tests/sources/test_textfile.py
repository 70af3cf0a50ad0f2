"""Text files: encoding detection, refusing non-text, transcoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import SourceError
from shoal.sources import textfile
from shoal.sources.textfile import detect_encoding, transcode


def write(tmp_path, data: bytes, name="t.csv"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (b"a,b\n1,2\n", "utf-8"),
        ("Zoë,€\n".encode(), "utf-8"),
        ("\ufeffZoë\n".encode(), "utf-8-sig"),
        ("Zoë\n".encode("utf-16"), "utf-16"),
        ("Käse;3,50 €\n".encode("cp1252"), "cp1252"),
        (b"\xe9t\xe9,\x81\n", "latin-1"),  # 0x81 is undefined in Windows-1252
    ],
)
def test_detects_the_encoding(tmp_path, data, encoding):
    assert detect_encoding(write(tmp_path, data)) == encoding


def test_a_bad_byte_at_the_very_end_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(textfile, "CHUNK_BYTES", 1024)
    assert detect_encoding(write(tmp_path, b"x,1\n" * 5000 + b"\xe4\n")) == "cp1252"


def test_a_character_split_between_chunks_is_still_utf8(tmp_path, monkeypatch):
    monkeypatch.setattr(textfile, "CHUNK_BYTES", 1024)
    data = b"a" * 1023 + "ü".encode() + b"\n"  # the two bytes of ü straddle the chunks
    assert detect_encoding(write(tmp_path, data)) == "utf-8"


def test_a_file_cut_inside_a_character_is_not_utf8(tmp_path):
    assert detect_encoding(write(tmp_path, b"abc\n" + "ü".encode()[:1])) == "cp1252"


def test_empty_and_binary_files_are_refused(tmp_path):
    with pytest.raises(SourceError, match=r"t\.csv is empty$"):
        detect_encoding(write(tmp_path, b""))
    with pytest.raises(SourceError, match="looks binary, not a text CSV file"):
        detect_encoding(write(tmp_path, b"PK\x03\x04\x00\x00binary"))


def test_a_given_encoding_skips_decoding_but_not_the_checks(tmp_path):
    assert detect_encoding(write(tmp_path, b"\xff\xfe"), given="latin-1") == "latin-1"
    with pytest.raises(SourceError, match="is empty"):
        detect_encoding(write(tmp_path, b""), given="latin-1")
    # UTF-16 without a byte-order mark is full of NUL bytes, yet text when the user says so.
    assert detect_encoding(write(tmp_path, "a\n".encode("utf-16-le")), given="utf-16-le")


def test_unknown_encoding(tmp_path):
    with pytest.raises(SourceError, match="unknown encoding 'no-such-codec'"):
        detect_encoding(write(tmp_path, b"a\n"), given="no-such-codec")


def test_transcode_streams_to_utf8(tmp_path):
    source = write(tmp_path, "Käse;3,50 €\r\nMünchen\r\n".encode("cp1252"))
    target = transcode(source, "cp1252", tmp_path / "out.csv")
    assert target.read_bytes() == "Käse;3,50 €\r\nMünchen\r\n".encode()


def test_transcode_refuses_bytes_the_encoding_lacks(tmp_path):
    source = write(tmp_path, b"ok\n\x81\n")
    with pytest.raises(SourceError, match="is not valid cp1252 text"):
        transcode(source, "cp1252", tmp_path / "out.csv")


def _naive_longest_line(data: bytes) -> int:
    return max(len(line) for line in data.split(b"\n"))


@given(
    lines=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30),
    chunk=st.integers(min_value=1, max_value=50),
)
def test_long_line_check_agrees_with_splitting_lines(tmp_path_factory, lines, chunk):
    limit = 16
    data = b"\n".join(b"x" * n for n in lines)
    path = tmp_path_factory.mktemp("lines") / "t.csv"
    path.write_bytes(data or b"\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(textfile, "MAX_LINE_BYTES", limit)
        patch.setattr(textfile, "CHUNK_BYTES", chunk)
        if _naive_longest_line(data) > limit:
            with pytest.raises(SourceError, match="has a line longer than"):
                detect_encoding(path)
        else:
            assert detect_encoding(path) == "utf-8"
