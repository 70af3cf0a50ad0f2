"""CSV and TSV: dialect, header and encoding detection, and hostile files."""

from __future__ import annotations

import os

import pytest

from shoal.errors import SourceError, TypeDriftError
from shoal.sources.csv import MAX_LINE_BYTES, detect_encoding
from tests.sources.util import read


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_plain_csv_with_types(tmp_path):
    path = write(
        tmp_path, "a.csv", b"id,name,price,day\n1,tea,2.5,2026-01-02\n2,cake,3,2026-01-03\n"
    )
    table = read(path)
    assert table.column_names == ["id", "name", "price", "day"]
    assert table.column("id").to_pylist() == [1, 2]
    assert table.column("price").to_pylist() == [2.5, 3.0]
    assert str(table.schema.field("day").type) == "date32[day]"


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_is_detected(tmp_path, delimiter):
    text = f"a{delimiter}b\n1{delimiter}x\n2{delimiter}y\n".encode()
    table = read(write(tmp_path, "d.csv", text))
    assert table.to_pydict() == {"a": [1, 2], "b": ["x", "y"]}


def test_tsv_forces_tab(tmp_path):
    table = read(write(tmp_path, "t.tsv", b"a\tb,c\n1\tx,y\n"))
    assert table.to_pydict() == {"a": [1], "b,c": ["x,y"]}


def test_header_detection_without_header(tmp_path):
    table = read(write(tmp_path, "n.csv", b"1,2\n3,4\n"))
    assert table.num_rows == 2
    assert table.column(0).to_pylist() == [1, 3]


def test_header_can_be_forced(tmp_path):
    table = read(write(tmp_path, "h.csv", b"a,b\nc,d\n"), header=False)
    assert table.num_rows == 2


def test_quoted_fields_with_newlines(tmp_path):
    data = b'id,comment\n1,"line one\nline two"\n2,"say ""hi"", ok"\n'
    table = read(write(tmp_path, "q.csv", data))
    assert table.column("comment").to_pylist() == ["line one\nline two", 'say "hi", ok']


def test_windows_1252_shop_export(tmp_path):
    text = "Artikel;Preis;Filiale\nKäse;3,50 €;München\nBrötchen;0,40 €;Köln\n"
    path = write(tmp_path, "export.csv", text.encode("cp1252"))
    assert detect_encoding(path) == "cp1252"
    table = read(path)
    assert table.column("Artikel").to_pylist() == ["Käse", "Brötchen"]
    assert table.column("Preis").to_pylist() == ["3,50 €", "0,40 €"]
    assert table.column("Filiale").to_pylist() == ["München", "Köln"]


def test_latin1_when_cp1252_cannot_decode(tmp_path):
    # 0x81 is undefined in Windows-1252 but a (control) character in Latin-1.
    path = write(tmp_path, "l.csv", b"a,b\n\xe9t\xe9,\x81x\n")
    assert detect_encoding(path) == "latin-1"
    assert read(path).column("a").to_pylist() == ["été"]


def test_utf8_with_bom_and_utf16(tmp_path):
    bom = write(tmp_path, "bom.csv", "\ufeffname,n\nZoë,1\n".encode())
    assert read(bom).to_pydict() == {"name": ["Zoë"], "n": [1]}
    utf16 = write(tmp_path, "u16.csv", "name\tn\nZoë\t1\n".encode("utf-16"))
    assert read(utf16).to_pydict() == {"name": ["Zoë"], "n": [1]}


def test_non_utf8_late_in_a_file_is_found(tmp_path):
    body = b"a,b\n" + b"x,1\n" * 200_000 + b"\xe4,2\n"
    path = write(tmp_path, "late.csv", body)
    assert detect_encoding(path) == "cp1252"
    assert read(path).column("a").to_pylist()[-1] == "ä"


def test_explicit_encoding_wins(tmp_path):
    path = write(tmp_path, "e.csv", "a\nü\n".encode("cp1252"))
    assert read(path, encoding="latin-1").column("a").to_pylist() == ["ü"]
    with pytest.raises(SourceError, match="unknown encoding"):
        read(path, encoding="no-such-codec")


def test_empty_file_is_refused(tmp_path):
    with pytest.raises(SourceError, match="empty"):
        read(write(tmp_path, "e.csv", b""))


def test_header_only_gives_zero_rows_with_the_columns(tmp_path):
    table = read(write(tmp_path, "h.csv", b"order_id,store,amount\n"))
    assert table.num_rows == 0
    assert table.column_names == ["order_id", "store", "amount"]


def test_ragged_rows_are_refused(tmp_path):
    with pytest.raises(SourceError, match=r"ragged|fields"):
        read(write(tmp_path, "r.csv", b"a,b\n1,2\n3,4,5\n6,7\n"))


def test_binary_garbage_named_csv_is_refused(tmp_path):
    garbage = bytes(range(256)) * 64
    with pytest.raises(SourceError, match="binary"):
        read(write(tmp_path, "g.csv", garbage))


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read(tmp_path / "nope.csv")


def test_directory_named_csv(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(SourceError, match="not a file"):
        read(tmp_path / "dir.csv")


def test_non_utf8_file_name(tmp_path):
    name = os.fsdecode(b"caf\xe9 sales.csv")
    path = tmp_path / name
    path.write_bytes(b"a\n1\n")
    assert read(path).to_pydict() == {"a": [1]}
    with pytest.raises(SourceError) as info:
        read(tmp_path / os.fsdecode(b"missing \xff.csv"))
    str(info.value).encode("utf-8")  # the message prints without crashing


def test_unicode_file_name(tmp_path):
    path = write(tmp_path, "Verkäufe ü 2026.csv", b"a\n1\n")
    assert read(path).num_rows == 1


def test_value_not_fitting_the_sampled_type_raises_type_drift(tmp_path):
    body = b"a\n" + b"1\n" * 300_000 + b"oops\n"
    path = write(tmp_path, "late.csv", body)
    with pytest.raises(TypeDriftError, match="does not fit"):
        read(path)
    exact = read(path, exact_types=True)
    assert str(exact.schema.field("a").type) == "string"
    assert exact.column("a").to_pylist()[-1] == "oops"


def test_publish_rereads_with_exact_types_after_type_drift(tmp_path, node):
    body = b"a,b\n" + b"1,x\n" * 300_000 + b"oops,y\n"
    result = node.publish("late", str(write(tmp_path, "late.csv", body)))
    assert result.rows_total == 300_001
    assert node.contract("late").column("a").logical_type == "string"


def test_long_line_is_refused(tmp_path):
    path = write(tmp_path, "long.csv", b"a\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\n")
    with pytest.raises(SourceError, match="longer than"):
        read(path)


@pytest.mark.slow
def test_one_gigabyte_line_is_refused(tmp_path):
    path = tmp_path / "huge.csv"
    chunk = b"y" * (16 * 1024 * 1024)
    with path.open("wb") as handle:
        handle.write(b"a,b\n")
        for _ in range(64):
            handle.write(chunk)
        handle.write(b"\n")
    try:
        with pytest.raises(SourceError, match="longer than"):
            read(path)
    finally:
        path.unlink()


def test_scratch_copy_is_removed(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = write(tmp_path, "w.csv", "a\nä\n".encode("cp1252"))
    read(path, scratch_dir=scratch)
    assert list(scratch.iterdir()) == []
