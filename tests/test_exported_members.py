"""The public API is exactly what `shoal.__all__` says, and all of it is importable."""

from __future__ import annotations

import shoal


def test_all_exports_exist():
    for name in shoal.__all__:
        assert hasattr(shoal, name), name


def test_no_public_name_is_left_out():
    public = {
        name
        for name, value in vars(shoal).items()
        if not name.startswith("_") and not getattr(value, "__file__", None)
    }
    assert public - {"annotations"} <= set(shoal.__all__)


def test_connect_sql_and_publish(tmp_path):
    import pyarrow as pa

    shoal.Node.init(tmp_path / "home", "shop")
    mesh = shoal.connect(tmp_path / "home")
    result = mesh.publish("prices", pa.table({"sku": ["a", "b"], "price": [1.0, 2.5]}))
    assert result["version"] == 1
    got = mesh.sql("SELECT sum(price) AS total FROM shop.prices")
    assert got.arrow().to_pylist() == [{"total": 3.5}]
    assert [p["name"] for p in mesh.products()] == ["shop.prices"]
    assert len(got) == 1
    assert got.rows() == [(3.5,)]
