"""Dashboards as files: the model's checks, the shipped dashboards, saving and loading,
and names that would leave the directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.ui.dashboards import (
    SHIPPED_DIR,
    Dashboard,
    DashboardError,
    DashboardStore,
    check_name,
    from_data,
    parse,
)
from monitoring.ui.panels import ALL, substitute

PANEL = {"title": "up", "queries": [{"promql": "up"}]}


def dash(**extra: object) -> dict[str, object]:
    return {"title": "T", "rows": [{"panels": [PANEL]}], **extra}


def test_shipped_dashboards_are_valid_and_their_queries_name_their_variables() -> None:
    store = DashboardStore("/nonexistent", SHIPPED_DIR)
    names = store.names()
    assert {"services", "system", "models", "pipeline", "alerts"} <= set(names)
    for name in names:
        d = store.get(name)
        assert d is not None, name
        values = {v.name: ALL for v in d.variables}
        for p in d.panels():
            for q in p.queries:
                if q.promql:
                    substitute(q.promql, values, 15)  # PanelError on an unknown $var


def test_panels_without_an_id_are_numbered_and_ids_are_unique() -> None:
    d = from_data({"title": "T", "rows": [{"panels": [PANEL, {**PANEL, "id": "x"}]},
                                          {"panels": [PANEL]}]}, "t")  # fmt: skip
    assert [p.id for p in d.panels()] == ["r0p0", "x", "r1p0"]
    with pytest.raises(DashboardError, match="used twice"):
        from_data({"title": "T", "rows": [{"panels": [{**PANEL, "id": "a"}] * 2}]}, "t")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (dash(rows=[{"panels": [{"title": "x", "queries": [{}]}]}]), "exactly one of promql"),
        (dash(rows=[{"panels": [{"queries": [{"promql": "up", "sql": "SELECT 1"}]}]}]),
         "exactly one of promql"),
        (dash(rows=[{"panels": [{**PANEL, "type": "pie"}]}]), "type"),
        (dash(rows=[{"panels": [{**PANEL, "width": 13}]}]), "width"),
        (dash(rows=[{"panels": [{**PANEL, "id": "../x"}]}]), "panel id"),
        (dash(rows=[]), "rows"),
        (dash(variables=[{"name": "1x", "label": "job"}]), "names are"),
        (dash(variables=[{"name": "x"}]), "one of label, sql, values or text"),
        (dash(variables=[{"name": "x", "label": "a"}, {"name": "x", "label": "b"}]), "unique"),
        (dash(refresh="soon"), "refresh"),
        (dash(extra_key=1), "extra_key"),
        ([1, 2], "a mapping"),
    ],
)  # fmt: skip
def test_bad_dashboards_are_refused_with_the_key(body: object, fragment: str) -> None:
    with pytest.raises(DashboardError, match=fragment):
        from_data(body, "t")


def test_parse_refuses_oversized_and_malformed_text() -> None:
    with pytest.raises(DashboardError, match="over"):
        parse("x" * (300 * 1024), "big")
    with pytest.raises(DashboardError, match="not valid YAML"):
        parse("title: [unclosed", "bad")


def test_json_files_are_dashboards_too(tmp_path: Path) -> None:
    (tmp_path / "j.json").write_text('{"title": "J", "rows": [{"panels": [{"queries": '
                                     '[{"sql": "SELECT 1"}]}]}]}')  # fmt: skip
    d = DashboardStore(tmp_path, None).get("j")
    assert d is not None and d.title == "J"


def test_save_and_load_round_trip_and_the_user_copy_wins(tmp_path: Path) -> None:
    shipped, user = tmp_path / "shipped", tmp_path / "user"
    shipped.mkdir()
    (shipped / "svc.yaml").write_text(
        "title: Shipped\nrows: [{panels: [{queries: [{promql: up}]}]}]\n"
    )
    store = DashboardStore(user, shipped)
    assert store.get("svc").title == "Shipped"  # type: ignore[union-attr]
    d = from_data(dash(title="Mine", refresh="30s", time={"last": "6h"}), "t")
    path = store.save("svc", d)
    assert path == (user / "svc.yaml").resolve()
    assert "refresh: 30s" in path.read_text()
    again = store.get("svc")
    assert again == d
    assert [x["user"] for x in store.listing()] == [True]
    assert not [p for p in user.iterdir() if p.suffix == ".tmp"]


@pytest.mark.parametrize(
    "name",
    ["../escape", "..", ".", "", "a/b", "/abs", ".hidden", "Upper", "a" * 65, "a\x00b",
     "%2e%2e", "a b", "a\\b", "x.yaml"],
)  # fmt: skip
def test_names_that_could_leave_the_directory_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DashboardError, match="a dashboard name"):
        check_name(name)
    store = DashboardStore(tmp_path / "user", None)
    with pytest.raises(DashboardError):
        store.save(name, Dashboard.model_validate(dash()))
    with pytest.raises(DashboardError):
        store.get(name)
    assert not (tmp_path / "escape.yaml").exists()
    assert not list(tmp_path.rglob("*.yaml"))


def test_an_invalid_file_is_listed_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("title: B\nrows: []\n")
    store = DashboardStore(tmp_path, None)
    [entry] = store.listing()
    assert entry["name"] == "broken" and "rows" in entry["error"]


def test_parsed_dashboards_are_cached_until_the_file_changes(tmp_path: Path) -> None:
    store = DashboardStore(tmp_path, None)
    store.MAX_CACHED = 2
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text(f"title: {name}\nrows: [{{panels: [{PANEL}]}}]\n")
    first = store.get("a")
    assert store.get("a") is first
    (tmp_path / "a.yaml").write_text(f"title: changed\nrows: [{{panels: [{PANEL}]}}]\n")
    assert store.get("a").title == "changed"  # type: ignore[union-attr]
    store.get("b")
    store.get("c")
    assert len(store._cache) == 2  # bounded: the oldest went
