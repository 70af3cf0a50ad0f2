"""CSV and TSV: dialect, header, encoding and types, and hostile files."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from shoal.errors import SourceError, TypeDriftError
from shoal.sources import BATCH_ROWS, SourceOptions, open_source
from shoal.sources import csv as csv_source
from shoal.sources.textfile import MAX_LINE_BYTES
from tests.sources.util import read


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def message(excinfo) -> str:
    """The error's text after the file name, so a test never matches the tmp path."""
    return str(excinfo.value).split(".csv", 1)[-1]


def test_plain_csv_with_types(tmp_path):
    path = write(
        tmp_path, "a.csv", b"id,name,price,day\n1,tea,2.5,2026-01-02\n2,cake,3,2026-01-03\n"
    )
    table = read(path)
    assert table.to_pydict() == {
        "id": [1, 2],
        "name": ["tea", "cake"],
        "price": [2.5, 3.0],
        "day": [dt.date(2026, 1, 2), dt.date(2026, 1, 3)],
    }
    assert str(table.schema.field("day").type) == "date32[day]"


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_is_detected(tmp_path, delimiter):
    text = f"a{delimiter}b\n1{delimiter}x\n2{delimiter}y\n".encode()
    assert read(write(tmp_path, "d.csv", text)).to_pydict() == {"a": [1, 2], "b": ["x", "y"]}


@pytest.mark.parametrize("name", ["t.tsv", "t.tab", "T.TSV"])
def test_tsv_and_tab_force_tab(tmp_path, name):
    table = read(write(tmp_path, name, b"a\tb,c\n1\tx,y\n"))
    assert table.to_pydict() == {"a": [1], "b,c": ["x,y"]}


def test_delimiter_option_wins(tmp_path):
    table = read(write(tmp_path, "p.txt", b"a|b,c\n1|x,y\n"), delimiter=",")
    assert table.column_names == ["a|b", "c"]


def test_header_detection_without_header(tmp_path):
    table = read(write(tmp_path, "n.csv", b"1,2\n3,4\n"))
    assert table.num_rows == 2
    assert table.column(0).to_pylist() == [1, 3]


def test_header_option_wins(tmp_path):
    path = write(tmp_path, "h.csv", b"a,b\nc,d\n")
    assert read(path, header=False).num_rows == 2
    assert read(write(tmp_path, "n.csv", b"1,2\n3,4\n"), header=True).column_names == ["1", "2"]


def test_quoted_fields_with_newlines_and_quotes(tmp_path):
    data = b'id,comment\n1,"line one\nline two"\n2,"say ""hi"", ok"\n'
    table = read(write(tmp_path, "q.csv", data))
    assert table.column("comment").to_pylist() == ["line one\nline two", 'say "hi", ok']


def test_windows_line_endings(tmp_path):
    assert read(write(tmp_path, "w.csv", b"a,b\r\n1,x\r\n")).to_pydict() == {"a": [1], "b": ["x"]}


def test_windows_1252_shop_export(tmp_path):
    text = "Artikel;Preis;Filiale\nKäse;3,50 €;München\nBrötchen;0,40 €;Köln\n"
    table = read(write(tmp_path, "export.csv", text.encode("cp1252")))
    assert table.to_pydict() == {
        "Artikel": ["Käse", "Brötchen"],
        "Preis": ["3,50 €", "0,40 €"],
        "Filiale": ["München", "Köln"],
    }


def test_decimal_commas_stay_text(tmp_path):
    # DuckDB reads '.' as the decimal mark only; a contract can type "3,50" later.
    text = "Artikel;Preis;Menge\nKäse;3,50;2\nBrot;12,00;1\n"
    table = read(write(tmp_path, "de.csv", text.encode("cp1252")))
    assert table.to_pydict() == {
        "Artikel": ["Käse", "Brot"],
        "Preis": ["3,50", "12,00"],
        "Menge": [2, 1],
    }


def test_latin1_when_cp1252_cannot_decode(tmp_path):
    table = read(write(tmp_path, "l.csv", b"a,b\n\xe9t\xe9,\x81x\n"))
    assert table.to_pydict() == {"a": ["été"], "b": ["\x81x"]}


def test_utf8_with_bom_and_utf16(tmp_path):
    bom = write(tmp_path, "bom.csv", "\ufeffname,n\nZoë,1\n".encode())
    assert read(bom).to_pydict() == {"name": ["Zoë"], "n": [1]}
    utf16 = write(tmp_path, "u16.csv", "name\tn\nZoë\t1\n".encode("utf-16"))
    assert read(utf16).to_pydict() == {"name": ["Zoë"], "n": [1]}


def test_utf16_without_bom_needs_the_encoding_option(tmp_path):
    path = write(tmp_path, "u16.csv", "name,n\nZoë,1\n".encode("utf-16-le"))
    with pytest.raises(SourceError, match="looks binary") as info:
        read(path)
    assert "--encoding utf-16" in (info.value.hint or "")
    assert read(path, encoding="utf-16-le").to_pydict() == {"name": ["Zoë"], "n": [1]}


def test_non_utf8_late_in_a_file_is_found(tmp_path):
    body = b"a,b\n" + b"x,1\n" * 200_000 + b"\xe4,2\n"
    assert read(write(tmp_path, "late.csv", body)).column("a").to_pylist()[-1] == "ä"


def test_explicit_encoding_wins(tmp_path):
    path = write(tmp_path, "e.csv", "a\nü\n".encode("cp1252"))
    assert read(path, encoding="latin-1").column("a").to_pylist() == ["ü"]
    with pytest.raises(SourceError, match="unknown encoding"):
        read(path, encoding="no-such-codec")
    with pytest.raises(SourceError) as info:
        read(path, encoding="utf-8")
    assert message(info) == " is not valid UTF-8 (line 2)"


def test_empty_file_is_refused(tmp_path):
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "e.csv", b""))
    assert message(info) == " is empty"
    with pytest.raises(SourceError, match="is empty"):
        read(write(tmp_path, "e.csv", b""), encoding="latin-1")


@pytest.mark.parametrize("data", [b"order_id,store,amount\n", b"order_id,store,amount"])
def test_header_only_gives_zero_rows_with_the_columns(tmp_path, data):
    table = read(write(tmp_path, "h.csv", data))
    assert table.num_rows == 0
    assert table.column_names == ["order_id", "store", "amount"]
    assert {str(t) for t in table.schema.types} == {"string"}


def test_ragged_rows_are_refused_with_the_line(tmp_path):
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "r.csv", b"a,b\n1,2\n3,4,5\n6,7\n"))
    assert message(info) == ": line 3 has 3 fields, the first line has 2 fields (ragged rows)"
    assert "--delimiter" in (info.value.hint or "")


def test_short_row_far_beyond_the_sniffed_sample(tmp_path):
    data = b"a,b\n" + b'1,"x, y"\n' * 30_000 + b"3\n6,7\n"
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "r.csv", data))
    assert message(info) == ": line 30002 has 1 field, the first line has 2 fields (ragged rows)"


def test_title_line_above_the_header_is_reported(tmp_path):
    data = b"Umsatz Filiale 12\nid;name\n1;x\n2;y\n"
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "t.csv", data))
    assert message(info) == ": line 2 has 2 fields, the first line has 1 field (ragged rows)"


def test_cut_off_file_with_an_open_quote(tmp_path):
    data = b"a,b\n" + b'1,"x, y"\n' * 3000 + b'2,"abc'
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "cut.csv", data))
    assert (
        message(info)
        == ": a quoted field starting on line 3002 is never closed (is the file cut off?)"
    )


def test_binary_garbage_named_csv_is_refused(tmp_path):
    with pytest.raises(SourceError) as info:
        read(write(tmp_path, "g.csv", bytes(range(256)) * 64))
    assert message(info) == " looks binary, not a text CSV file"


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match=r"nope\.csv does not exist"):
        read(tmp_path / "nope.csv")


def test_directory_named_csv(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(SourceError, match=r"dir\.csv is not a file"):
        read(tmp_path / "dir.csv")


def test_non_utf8_file_name(tmp_path):
    path = tmp_path / os.fsdecode(b"caf\xe9 sales.csv")
    path.write_bytes("a\nKäse\n".encode("cp1252"))  # a transcoded copy is read, too
    assert read(path).to_pydict() == {"a": ["Käse"]}
    with pytest.raises(SourceError) as info:
        read(tmp_path / os.fsdecode(b"missing \xff.csv"))
    assert "missing \\xff.csv does not exist" in str(info.value).encode("utf-8").decode()


def test_unicode_file_name(tmp_path):
    assert read(write(tmp_path, "Verkäufe ü 2026.csv", b"a\n1\n")).to_pydict() == {"a": [1]}


def test_small_files_are_typed_from_every_row(tmp_path):
    body = b"a,b\n" + b"1,x\n" * 300_000 + b"oops,y\n"
    table = read(write(tmp_path, "late.csv", body))
    assert str(table.schema.field("a").type) == "string"
    assert table.column("a").to_pylist()[-1] == "oops"


def test_big_files_raise_type_drift_naming_line_and_column(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_source, "EXACT_TYPES_UP_TO", 0)  # every file counts as big
    body = b"a,b\n" + b"x,1\n" * 300_000 + b"y,oops\n"
    path = write(tmp_path, "late.csv", body)
    with pytest.raises(TypeDriftError) as info:
        read(path)
    assert message(info).startswith(
        " (line 300002), column 'b': Could not convert string \"oops\" to 'BIGINT'"
    )
    exact = read(path, exact_types=True)
    assert str(exact.schema.field("b").type) == "string"
    assert exact.column("b").to_pylist()[-1] == "oops"


def test_publish_rereads_with_exact_types_after_type_drift(tmp_path, node, monkeypatch):
    monkeypatch.setattr(csv_source, "EXACT_TYPES_UP_TO", 0)
    body = b"a,b\n" + b"1,x\n" * 300_000 + b"oops,y\n"
    result = node.publish("late", str(write(tmp_path, "late.csv", body)))
    assert result.rows_total == 300_001
    assert node.contract("late").column("a").logical_type == "string"


def test_streams_bounded_batches(tmp_path):
    rows = BATCH_ROWS * 2 + 7
    body = b"n,s\n" + b"".join(b"%d,x\n" % i for i in range(rows))
    with open_source(str(write(tmp_path, "big.csv", body)), SourceOptions()) as reader:
        batches = list(reader)
    assert max(b.num_rows for b in batches) <= BATCH_ROWS
    assert [v for b in batches for v in b.column(0).to_pylist()] == list(range(rows))


def test_long_line_is_refused(tmp_path):
    path = write(tmp_path, "long.csv", b"a\n" + b"x" * (MAX_LINE_BYTES + 10) + b"\n")
    with pytest.raises(SourceError) as info:
        read(path)
    assert message(info) == " has a line longer than 8 MiB"


@pytest.mark.slow
def test_one_gigabyte_line_is_refused(tmp_path):
    path = tmp_path / "huge.csv"
    chunk = b"y" * (16 * 1024 * 1024)
    try:
        with path.open("wb") as handle:
            handle.write(b"a,b\n")
            for _ in range(64):
                handle.write(chunk)
            handle.write(b"\n")
        assert path.stat().st_size > 2**30
        with pytest.raises(SourceError) as info:
            read(path)
        assert message(info) == " has a line longer than 8 MiB"
    finally:
        path.unlink(missing_ok=True)


def test_scratch_copy_is_removed(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = write(tmp_path, "w.csv", "a\nä\n".encode("cp1252"))
    with open_source(str(path), SourceOptions(scratch_dir=scratch)) as reader:
        assert len(list(scratch.iterdir())) == 1  # the UTF-8 copy, while reading
        assert reader.read_all().to_pydict() == {"a": ["ä"]}
    assert list(scratch.iterdir()) == []
