"""Excel workbooks: sheets, header, types, formulas, merged cells, broken files."""
# ruff: noqa: E501 -- the hand-built workbook XML is clearer unwrapped

from __future__ import annotations

import datetime as dt
import os
import zipfile

import openpyxl
import pytest

from shoal.errors import SourceError
from shoal.sources import SourceOptions, open_source
from shoal.sources import excel as excel_source
from tests.sources.util import read


def book_with(rows, path, title=None):
    """Save a one-sheet workbook holding `rows` at `path`."""
    book = openpyxl.Workbook()
    sheet = book.active
    if title:
        sheet.title = title
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def message(excinfo) -> str:
    """The error's text after the file name, so a test never matches the tmp path."""
    return str(excinfo.value).split(".xlsx", 1)[-1]


@pytest.fixture
def workbook(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Verkauf"
    sheet.append(["id", "Artikel", "Preis", "Datum", "bezahlt", None, "Artikel"])
    sheet.append([1, "Käse", 3.5, dt.datetime(2026, 1, 2, 9, 30), True, None, "x"])
    sheet.append([2, "Brot", 2, dt.datetime(2026, 1, 3), False, None, "y"])
    sheet.append([3, None, 1.25, None, None, None, None])
    other = book.create_sheet("Lager")
    other.append(["sku", "menge"])
    other.append(["a", 5])
    path = tmp_path / "shop.xlsx"
    book.save(path)
    return path


def test_first_sheet_with_typed_columns(workbook):
    table = read(workbook)
    assert table.column_names == [
        "id",
        "Artikel",
        "Preis",
        "Datum",
        "bezahlt",
        "column_6",
        "Artikel_2",
    ]
    assert [str(t) for t in table.schema.types] == [
        "int64",
        "string",
        "double",
        "timestamp[us]",
        "bool",
        "string",
        "string",
    ]
    assert table.to_pydict() == {
        "id": [1, 2, 3],
        "Artikel": ["Käse", "Brot", None],
        "Preis": [3.5, 2.0, 1.25],
        "Datum": [dt.datetime(2026, 1, 2, 9, 30), dt.datetime(2026, 1, 3), None],
        "bezahlt": [True, False, None],
        "column_6": [None, None, None],
        "Artikel_2": ["x", "y", None],
    }


def test_sheet_by_name(workbook):
    assert read(workbook, sheet="Lager").to_pydict() == {"sku": ["a"], "menge": [5]}


def test_unknown_sheet_lists_the_sheets(workbook):
    with pytest.raises(SourceError) as info:
        read(workbook, sheet="Nope")
    assert message(info) == " has no sheet 'Nope'; its sheets: Verkauf, Lager"


def test_merged_cells_give_value_top_left(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["region", "store"])
    sheet.append(["Nord", "Hamburg"])
    sheet.append([None, "Bremen"])
    sheet.merge_cells("A2:A3")
    path = tmp_path / "merged.xlsx"
    book.save(path)
    assert read(path).to_pydict() == {"region": ["Nord", None], "store": ["Hamburg", "Bremen"]}


def _xlsx_with_cached_formula(path):
    """Build a minimal .xlsx by hand: openpyxl cannot write a formula's cached value."""
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ),
        "xl/workbook.xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            "</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
            '<row r="1"><c r="A1" t="inlineStr"><is><t>qty</t></is></c>'
            '<c r="B1" t="inlineStr"><is><t>total</t></is></c></row>'
            '<row r="2"><c r="A2"><v>3</v></c><c r="B2"><f>A2*2</f><v>6</v></c></row>'
            '<row r="3"><c r="A3"><v>4</v></c><c r="B3"><f>A3*2</f><v>8</v></c></row>'
            "</sheetData></worksheet>"
        ),
    }
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_formulas_give_their_cached_values(tmp_path):
    path = _xlsx_with_cached_formula(tmp_path / "formulas.xlsx")
    assert read(path).to_pydict() == {"qty": [3, 4], "total": [6, 8]}


def test_formula_without_cached_value_reads_as_missing(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["a", "b"])
    sheet.append([2, "=A2*2"])
    path = tmp_path / "nocache.xlsx"
    book.save(path)
    assert read(path).to_pydict() == {"a": [2], "b": [None]}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", " is empty"),
        (b"PK\x03\x04garbage", " is not a readable spreadsheet: "),
        (b"just text, not excel", " is not a readable spreadsheet: "),
        (bytes(range(256)) * 16, " is not a readable spreadsheet: "),
    ],
)
def test_garbage_named_xlsx_is_refused(tmp_path, content, expected):
    path = tmp_path / "bad.xlsx"
    path.write_bytes(content)
    with pytest.raises(SourceError) as info:
        read(path)
    assert message(info).startswith(expected)


def test_truncated_workbook_is_refused(workbook):
    data = workbook.read_bytes()
    workbook.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError) as info:
        read(workbook)
    assert message(info).startswith(" is not a readable spreadsheet: ")


def test_empty_sheet_is_refused(tmp_path):
    path = tmp_path / "empty.xlsx"
    openpyxl.Workbook().save(path)
    with pytest.raises(SourceError) as info:
        read(path)
    assert message(info) == " (sheet 'Sheet') is empty"


def test_mixed_column_becomes_text(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["code"])
    for value in (1, "A7", 2.5):
        sheet.append([value])
    path = tmp_path / "mixed.xlsx"
    book.save(path)
    assert read(path).column("code").to_pylist() == ["1", "A7", "2.5"]


def test_header_only_gives_zero_rows_of_text_columns(tmp_path):
    table = read(book_with([["sku", "menge"]], tmp_path / "h.xlsx"))
    assert table.num_rows == 0
    assert table.column_names == ["sku", "menge"]
    assert [str(t) for t in table.schema.types] == ["string", "string"]


def test_table_away_from_a1_and_trailing_empty_rows(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet["C3"], sheet["D3"] = "sku", 2026  # a number as a header becomes its text
    sheet["C4"], sheet["D4"] = "a", 1
    sheet["C6"], sheet["D6"] = "b", 2  # row 5 stays empty: a row of nulls
    sheet["C9"] = None
    sheet["D12"].number_format = "0.00"  # formatted but empty: not data
    path = tmp_path / "away.xlsx"
    book.save(path)
    assert read(path).to_pydict() == {"sku": ["a", None, "b"], "2026": [1, None, 2]}


def test_number_kinds(tmp_path):
    rows = [["whole", "mixed", "big"], [1, 1, 2**53], [2.0, 2.5, 1e300]]
    table = read(book_with(rows, tmp_path / "n.xlsx"))
    assert [str(t) for t in table.schema.types] == ["int64", "double", "double"]
    assert table.to_pydict() == {"whole": [1, 2], "mixed": [1.0, 2.5], "big": [2.0**53, 1e300]}


def test_dates_alone_are_dates_and_with_times_timestamps(tmp_path):
    rows = [
        ["day", "when"],
        [dt.date(2026, 1, 2), dt.date(2026, 1, 2)],
        [dt.date(2026, 1, 3), dt.datetime(2026, 1, 3, 8, 15)],
    ]
    path = tmp_path / "d.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    for cell in ("A2", "A3", "B2"):
        sheet[cell].number_format = "yyyy-mm-dd"  # a date cell, not a date-time
    book.save(path)
    table = read(path)
    assert [str(t) for t in table.schema.types] == ["date32[day]", "timestamp[us]"]
    assert table.to_pydict() == {
        "day": [dt.date(2026, 1, 2), dt.date(2026, 1, 3)],
        "when": [dt.datetime(2026, 1, 2), dt.datetime(2026, 1, 3, 8, 15)],
    }


def test_batches_follow_batch_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(excel_source, "BATCH_ROWS", 4)
    path = book_with([["n"], *([i] for i in range(10))], tmp_path / "b.xlsx")
    with open_source(str(path), SourceOptions()) as reader:
        batches = list(reader)
    assert [b.num_rows for b in batches] == [4, 4, 2]
    assert [v for b in batches for v in b.column(0).to_pylist()] == list(range(10))


def test_non_utf8_and_unicode_file_names(tmp_path):
    for name in (os.fsdecode(b"caf\xe9.xlsx"), "Verkäufe ü.xlsx"):
        path = tmp_path / name
        with path.open("wb") as handle:
            book = openpyxl.Workbook()
            book.active.append(["a"])
            book.active.append([1])
            book.save(handle)
        assert read(path).to_pydict() == {"a": [1]}
