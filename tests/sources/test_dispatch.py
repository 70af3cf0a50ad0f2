"""The source kind follows from the path or URL; an unknown kind lists the supported ones."""

from __future__ import annotations

import pytest

from shoal.errors import SourceError
from shoal.sources import KINDS, SourceOptions, open_source, supported


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("sales.csv", "csv"),
        ("SALES.CSV", "csv"),
        ("export.tsv", "csv"),
        ("export.tab", "csv"),
        ("till.txt", "csv"),
        ("data.parquet", "parquet"),
        ("data.pq", "parquet"),
        ("data.json", "json"),
        ("data.ndjson", "json"),
        ("data.jsonl", "json"),
        ("book.xlsx", "excel"),
        ("book.xlsm", "excel"),
        ("book.xls", "excel"),
        ("book.ods", "excel"),
        ("Verkäufe ü.XLSX", "excel"),
        ("sqlite:///shop.db", "sqlite"),
        ("postgresql://u@h/db", "postgres"),
        ("postgres://u@h/db", "postgres"),
    ],
)
def test_kind_from_spec(spec, kind):
    matching = [k.name for k in KINDS if k.matches(spec)]
    assert matching[:1] == [kind]


@pytest.mark.parametrize("spec", ["data.xyz", "noextension", "http://example.com/x.bin", ""])
def test_unknown_kind_lists_supported(spec):
    with pytest.raises(SourceError) as info:
        open_source(spec, SourceOptions())
    message = str(info.value)
    assert "supported" in message
    for kind in KINDS:
        assert kind.name in message
    assert supported() in message
