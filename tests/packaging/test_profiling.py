"""`esteira profile`: CSV and Parquet datasets read in chunks into the core's reference profile, and
`esteira package --profile` putting it in the archive."""

from __future__ import annotations

import bisect
import csv
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import pytest

from esteira.cli import main
from esteira.drift.profile import (
    PROFILE_FILE,
    ReferenceProfile,
    as_model_input,
    categorical_feature,
    category_of,
    numeric_feature,
    round_down,
    round_up,
)
from esteira.packaging import profiling
from esteira.packaging.profiling import ProfileError, ProfileRequest, build_profile
from tests.packaging.support import package_cli

COLORS = ("red", "green", "blue", "teal")


def _rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        rows.append(
            {
                "age": round(rng.gauss(40, 12), 2) if rng.random() > 0.1 else None,
                "color": rng.choices(COLORS, weights=(5, 3, 2, 1))[0],
                "code": rng.randint(1, 4),
                "label": rng.choice(("cat", "dog")),
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100)
    return path


def _request(path: Path, **overrides: Any) -> ProfileRequest:
    options: dict[str, Any] = {"path": path, "prediction": "label", "categorical": frozenset({"code"})}
    return ProfileRequest(**(options | overrides))


def test_category_codes_written_as_floats_are_named_as_the_server_names_them(tmp_path: Path) -> None:
    """pandas writes a code column holding a gap as 1.0, 2.0: the server counts the number 1.0 as category "1"."""
    rows = [{"code": f"{code}.0", "label": "cat"} for code in (1, 2, 2, 3)]
    profile = build_profile(_request(_write_csv(tmp_path / "codes.csv", rows)), lambda _: None)
    (code,) = profile.features
    assert code.categories == [category_of(2.0), category_of(1.0), category_of(3.0)] == ["2", "1", "3"]


@pytest.mark.parametrize("writer", [_write_csv, _write_parquet], ids=["csv", "parquet"])
def test_chunked_profile_equals_the_in_memory_one(writer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read in chunks of 64 rows, the profile is the one the core builds from the whole columns."""
    monkeypatch.setattr(profiling, "CHUNK_ROWS", 64)
    rows = _rows(1000)
    path = writer(tmp_path / ("data.csv" if writer is _write_csv else "data.parquet"), rows)
    messages: list[str] = []

    profile = build_profile(_request(path), messages.append)

    ages = [as_model_input(float(r["age"])) for r in rows if r["age"] is not None]  # as the model takes them
    assert profile.rows == 1000
    assert profile.features[0] == numeric_feature("age", ages, 1000)
    assert profile.features[1] == categorical_feature("color", [r["color"] for r in rows], 1000)
    assert profile.features[2] == categorical_feature("code", [str(r["code"]) for r in rows], 1000)
    assert [f.name for f in profile.features] == ["age", "color", "code"]
    assert profile.predictions is not None and profile.predictions.labels == ["cat", "dog"]
    assert profile.predictions.counts == [sum(r["label"] == x for r in rows) for x in ("cat", "dog")]
    assert sum(m.startswith("reading") for m in messages) == 16  # 1000 rows in chunks of 64
    assert messages[-1].endswith("1000 rows (100%)")
    assert ReferenceProfile.model_validate_json(profile.to_json()) == profile


def test_sampled_edges_still_count_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the sample size the edges come from a sample, but the counts are exact."""
    monkeypatch.setattr(profiling, "SAMPLE_SIZE", 300)
    monkeypatch.setattr(profiling, "CHUNK_ROWS", 500)
    rows = _rows(5000, seed=3)
    profile = build_profile(_request(_write_csv(tmp_path / "big.csv", rows)))
    age = profile.features[0]
    assert age.type == "numeric"
    values = [as_model_input(float(r["age"])) for r in rows if r["age"] is not None]
    expected = [0] * (len(age.edges) + 1)
    for value in values:
        expected[bisect.bisect_left(age.edges, value)] += 1
    assert age.counts == expected
    assert age.min == round_down(min(values)) and age.max == round_up(max(values))
    assert max(age.counts) < 0.2 * len(values)  # sampled deciles still split the data evenly


def test_a_column_is_numeric_only_when_every_value_is(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text("size,weight\n1,2.5\nlarge,NA\n3,4\n")
    profile = build_profile(ProfileRequest(path=path))
    assert [(f.name, f.type, f.missing_rate) for f in profile.features] == [
        ("size", "categorical", 0.0),
        ("weight", "numeric", 0.333333),
    ]


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ("a,b\n1,2\n3\n", {}, "bad.csv: row 3 has 1 fields, the header has 2"),
        ("a,b\n1,2\n3,x\n", {"numeric": frozenset({"b"})}, "bad.csv: row 3, column 'b': 'x' is not a number"),
        ("a,b\n1,2\ninf,3\n", {}, "bad.csv: row 3, column 'a': 'inf' is not a finite number"),
        ("a,b\n1,\n2,\n", {}, "bad.csv: column 'b' has no values in 2 rows"),
        ("a,b\n1,2\n", {"exclude": frozenset({"c"})}, "bad.csv: --exclude names no column: 'c'"),
        ("a,b\n1,2\n", {"prediction": "p"}, "bad.csv: --prediction names no column: 'p'"),
        ("a,a\n1,2\n", {}, "bad.csv: row 1 names column 'a' twice"),
        ("a,b\n", {}, "bad.csv: no rows after the header"),
        ("", {}, "bad.csv: row 1 should name the columns"),
        ("a,b\n1,2\n", {"bins": 40}, "--bins must be between 2 and 31, got 40"),
        (
            "a,p\n1,2\n",
            {"prediction": "p", "exclude": frozenset({"p"})},
            "'p' cannot be both --prediction and --exclude",
        ),
        ("city,b\nNew York,1\nNew_York,2\n", {}, "categories 'New York' and 'New_York' are one bin"),
        (f"{'c' * 201},b\n1,2\n", {}, f"bad.csv: column '{'c' * 201}': name: String should have at most 200"),
    ],
)
def test_bad_csv_names_row_and_column(tmp_path: Path, content: str, options: dict[str, Any], message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ProfileError) as error:
        build_profile(ProfileRequest(path=path, **options))
    assert message in str(error.value)


def test_too_many_categories_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiling, "MAX_DISTINCT", 50)
    path = tmp_path / "ids.csv"
    path.write_text("id,x\n" + "".join(f"u{i},{i}\n" for i in range(60)))
    with pytest.raises(ProfileError, match="column 'id' has more than 50 distinct values"):
        build_profile(ProfileRequest(path=path))
    assert [f.name for f in build_profile(ProfileRequest(path=path, exclude=frozenset({"id"}))).features] == ["x"]


def test_bad_parquet_and_unknown_format(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ProfileError, match=r"broken\.parquet: not a readable Parquet file"):
        build_profile(ProfileRequest(path=broken))
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(ProfileError, match=r"data\.xlsx: unknown format '\.xlsx'"):
        build_profile(ProfileRequest(path=tmp_path / "data.xlsx"))


def test_command_writes_the_profile_and_reports_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write_csv(tmp_path / "train.csv", _rows(200))
    out = tmp_path / "profile.json"
    argv = ["profile", str(data), "-o", str(out), "--prediction", "label", "--categorical", "code", "--model", "m"]
    assert main(argv) == 0
    written = ReferenceProfile.model_validate_json(out.read_text())
    assert (written.model, written.source, written.rows) == ("m", "train.csv", 200)
    captured = capsys.readouterr()
    assert "1 numeric and 2 categorical features, predictions" in captured.out
    assert "train.csv: reading 200 rows (100%)" in captured.err

    assert main(["profile", str(data), "-o", str(out), "--numeric", "color"]) == 2
    assert "row 2, column 'color': 'red' is not a number (the column is --numeric)" in capsys.readouterr().err
    assert ReferenceProfile.model_validate_json(out.read_text()) == written  # a failed run leaves the file alone


@pytest.mark.slow
def test_package_profile_goes_in_the_archive(demo_models: tuple[Path, list[Any]], tmp_path: Path) -> None:
    source = demo_models[0] / "iris-1.0.0"
    profile = tmp_path / "iris-profile.json"
    profile.write_text((source / PROFILE_FILE).read_text())
    base = ["--name", "iris", "--version", "1.0.0", "--handler", "tabular", "--model-file", str(source / "model.pt")]
    base += ["--extra-files", str(source / "esteira-model.json")]
    out = tmp_path / "out"
    assert package_cli([*base, "--profile", str(profile), "--out", str(out)]) == 0
    with zipfile.ZipFile(out / "model-store" / "iris.mar") as archive:
        assert json.loads(archive.read(PROFILE_FILE)) == json.loads(profile.read_text())

    profile.write_text(json.dumps({"profileVersion": 2, "rows": 0, "features": []}))
    assert package_cli([*base, "--profile", str(profile), "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad" / "model-store").exists()


@pytest.mark.slow
def test_package_refuses_a_profile_the_model_server_could_never_count(
    demo_models: tuple[Path, list[Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Drift is counted for the model's inputs by name, as numbers, and predictions under its labels: a profile
    of other columns, of words or of other classes was packaged, and the server counted nothing against it."""
    source = demo_models[0] / "iris-1.0.0"
    reference = json.loads((source / PROFILE_FILE).read_text())
    base = ["--name", "iris", "--version", "1.0.0", "--handler", "tabular", "--model-file", str(source / "model.pt")]
    base += ["--extra-files", str(source / "esteira-model.json")]
    first = reference["features"][0]["name"]
    renamed = {**reference, "features": [{**reference["features"][0], "name": "age"}, *reference["features"][1:]]}
    words = {**reference, "features": [{"name": first, "type": "categorical", "categories": ["red"], "counts": [3, 0]}]}
    classes = {**reference, "predictions": {"labels": ["0", "1"], "counts": [5, 5]}}
    for index, (profile, wanted) in enumerate(
        (
            (renamed, "feature 'age' is none of the model's inputs"),
            (words, f"feature {first!r}: category 'red' is no number"),
            (classes, "predictions: class '0' is none of the model's labels"),
        )
    ):
        path = tmp_path / f"profile-{index}.json"
        path.write_text(json.dumps(profile))
        out = tmp_path / f"out-{index}"
        assert package_cli([*base, "--profile", str(path), "--out", str(out)]) == 2
        assert wanted in capsys.readouterr().err
        assert not (out / "model-store").exists()


def test_a_row_of_empty_cells_is_a_row_of_missing_values_and_a_blank_line_no_row(tmp_path: Path) -> None:
    """The model server counts a missing input as missing: a reference that dropped rows of empty cells made
    unchanged data look like a data-quality problem."""
    path = tmp_path / "gaps.csv"
    path.write_text("a,b\n1,2\n,\n\n  \n3,4\n,\n")
    profile = build_profile(ProfileRequest(path=path))
    assert profile.rows == 4
    assert [feature.missing_rate for feature in profile.features] == [0.5, 0.5]
