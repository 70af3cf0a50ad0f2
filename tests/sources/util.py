"""Reading a source whole, for tests."""

from __future__ import annotations

import pyarrow as pa

from shoal.sources import SourceOptions, open_source


def read(spec, **options) -> pa.Table:
    with open_source(str(spec), SourceOptions(**options)) as reader:
        return reader.read_all()
