"""`core.data.tables`: delimited tables under the data root, on generated files (and the shared
community tables); every error names the file (relative to the data root), line and column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data.errors import DataError
from core.data.tables import TableError, read_columns, read_table, sniff_delimiter

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"  # the default data root


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root of generated files."""
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(tmp_path))
    return tmp_path


def _write(root: Path, name: str, text: str, newline: str = "\n") -> str:
    (root / name).write_bytes(text.replace("\n", newline).encode())
    return name


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("delimiter", [",", "\t", ";"])
def test_line_endings_and_sniffed_delimiters_read_the_same(root, newline, delimiter):
    text = "site,a,b\ns1,1,0\n\ns2,2.5,3\n".replace(",", delimiter)
    table = read_table(_write(root, "t.csv", text, newline), id_column="site")
    assert table.columns == ["a", "b"]
    assert table.ids.tolist() == ["s1", "s2"]
    np.testing.assert_array_equal(table.values, [[1, 0], [2.5, 3]])
    assert table.lines.tolist() == [2, 4]  # the blank line 3 is skipped but counted


def test_without_an_id_column_rows_are_numbered_and_quotes_are_honoured(root):
    name = _write(root, "q.csv", '"x, y","b"\n1,2\n3,4\n')
    table = read_table(name)
    assert table.columns == ["x, y", "b"] and table.ids.tolist() == ["1", "2"]
    assert sniff_delimiter('"a;b",c,d') == ","
    assert sniff_delimiter("single") == ","


def test_a_given_delimiter_wins_and_a_bom_is_dropped(root):
    name = "b.csv"
    (root / name).write_bytes("\ufeffa;b\n1;2\n".encode())
    assert read_table(name, delimiter=";").columns == ["a", "b"]
    with pytest.raises(TableError, match="unknown delimiter"):
        read_table(name, delimiter=":")


@pytest.mark.parametrize(
    ("text", "kwargs", "words"),
    [
        ("site,a,b\ns1,1,0\ns2,x,3\n", {}, ["t.csv, line 3, column 'a'", "'x' is not a finite"]),
        ("site,a,b\ns1,1,\n", {}, ["line 2, column 'b'", "an empty cell"]),
        ("site,a,b\ns1,1,nan\n", {}, ["line 2, column 'b'", "'nan' is not a finite"]),
        ("site,a,b\ns1,1,0\ns2,-3,0\n", {"nonnegative": True},
         ["line 3, column 'a'", "negative value -3", "allowed: counts"]),
        ("site,a,b\ns1,1,0\ns2,1\n", {}, ["line 3", "has 2 fields but the header has 3"]),
        ("site,a,b\ns1,1,0\ns1,2,0\n", {}, ["line 3, column 'site'", "the id 's1' is repeated"]),
        ("site,a,a\ns1,1,0\n", {}, ["line 1, column 'a'", "repeats a column name"]),
        ("site,a,b\n", {}, ["line 1", "a header but no data rows"]),
        ("\n\n", {}, ["t.csv: is empty"]),
        ("site\ns1\n", {}, ["has no value columns"]),
    ],
)  # fmt: skip
def test_bad_tables_name_file_line_and_column(root, text, kwargs, words):
    name = _write(root, "t.csv", text)
    with pytest.raises(TableError) as err:
        read_table(name, id_column="site", allowed="counts >= 0", **kwargs)
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)
    for word in words:
        assert word in str(err.value)
    assert str(root) not in str(err.value)  # named relative to the data root


def test_a_missing_id_column_or_file_is_named(root):
    name = _write(root, "t.csv", "a,b\n1,2\n")
    with pytest.raises(TableError, match=r"t.csv, line 1, column 'site': has no id column"):
        read_table(name, id_column="site")
    with pytest.raises(TableError, match="nope.csv: file not found"):
        read_table("nope.csv")
    with pytest.raises(ValueError, match="relative to the data root"):
        read_table("../etc/passwd")


def test_read_columns_picks_named_columns_and_stops_at_max_rows(root):
    text = "event\tspecies\tcount\tnote\ne1\tA a\t2\tx\ne1\tB b\tX\t\n\ne2\tA a\t1\tlong note\n"
    name = _write(root, "r.tsv", text)
    cols = read_columns(name, ["species", "event"])
    assert cols.columns["species"].tolist() == ["A a", "B b", "A a"]
    assert cols.columns["event"].tolist() == ["e1", "e1", "e2"]
    assert cols.lines.tolist() == [2, 3, 5] and not cols.truncated
    first = read_columns(name, ["count"], max_rows=2)
    assert first.columns["count"].tolist() == ["2", "X"] and first.truncated
    with pytest.raises(TableError, match=r"line 1, column 'COUNT': has no count column"):
        read_columns(name, ["event", "COUNT"], roles=["event", "count"])


def test_the_shared_community_tables_read(monkeypatch):
    import os

    if not os.environ.get("TRAINCTL_DATA_ROOT"):
        monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(SHARED))
    vare = read_table("varespec/varespec.csv", nonnegative=True)  # carriage-return line ends
    assert vare.values.shape == (24, 44) and vare.columns[0] == "Callvulg"
    mite = read_table("mite/mite.csv", id_column="sample", nonnegative=True)
    assert mite.values.shape == (70, 35) and mite.ids[0] == "1"
    assert read_table("BCI/BCI.csv").values.shape == (50, 225)
