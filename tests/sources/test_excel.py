"""Excel workbooks: sheets, header, types, formulas, merged cells, broken files."""
# ruff: noqa: E501 -- the hand-built workbook XML is clearer unwrapped

from __future__ import annotations

import datetime as dt
import zipfile

import openpyxl
import pytest

from shoal.errors import SourceError
from tests.sources.util import read


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
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert str(table.schema.field("id").type) == "int64"
    assert table.column("Preis").to_pylist() == [3.5, 2.0, 1.25]
    assert table.column("Artikel").to_pylist() == ["Käse", "Brot", None]
    assert table.column("Datum").to_pylist()[0] == dt.datetime(2026, 1, 2, 9, 30)
    assert table.column("bezahlt").to_pylist() == [True, False, None]


def test_sheet_by_name(workbook):
    assert read(workbook, sheet="Lager").to_pydict() == {"sku": ["a"], "menge": [5]}


def test_unknown_sheet_lists_the_sheets(workbook):
    with pytest.raises(SourceError, match="Verkauf, Lager"):
        read(workbook, sheet="Nope")


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


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"just text, not excel"])
def test_garbage_named_xlsx_is_refused(tmp_path, content):
    path = tmp_path / "bad.xlsx"
    path.write_bytes(content)
    with pytest.raises(SourceError):
        read(path)


def test_empty_sheet_is_refused(tmp_path):
    path = tmp_path / "empty.xlsx"
    openpyxl.Workbook().save(path)
    with pytest.raises(SourceError, match="empty"):
        read(path)


def test_mixed_column_becomes_text(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["code"])
    for value in (1, "A7", 2.5):
        sheet.append([value])
    path = tmp_path / "mixed.xlsx"
    book.save(path)
    assert read(path).column("code").to_pylist() == ["1", "A7", "2.5"]
