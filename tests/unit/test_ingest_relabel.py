"""Relabeling, scrape config validation and target labels against Prometheus' documented
semantics (cases after Prometheus' own relabel_test.go and the configuration docs)."""

from __future__ import annotations

from typing import Any

import pytest

from monitoring.config import ConfigError
from monitoring.ingest.relabel import compile_rules, process
from monitoring.ingest.scrape_config import RelabelConfig, ScrapeFile, parse_size
from monitoring.ingest.targets import JobTargets, populate


def run(labels: dict[str, str], *rules: dict[str, Any]) -> dict[str, str] | None:
    return process(labels, compile_rules([RelabelConfig(**r) for r in rules]))


BASE = {"a": "foo", "b": "bar", "c": "baz"}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        # replace: the default regex (.*) and replacement $1 copy the joined value
        ([{"source_labels": ["a"], "target_label": "d"}], {**BASE, "d": "foo"}),
        # joined with the separator, anchored regex, groups
        (
            [
                {
                    "source_labels": ["a", "b"],
                    "regex": "f(.*);(.*)r",
                    "target_label": "a",
                    "replacement": "ch${1}-ch${2}",
                }
            ],
            {**BASE, "a": "choo-chba"},
        ),
        # no match, no change (the regex is anchored: "o" does not match "foo")
        ([{"source_labels": ["a"], "regex": "o", "target_label": "d"}], BASE),
        # an empty replacement deletes the target label
        (
            [{"source_labels": ["a"], "regex": "foo", "target_label": "b", "replacement": ""}],
            {"a": "foo", "c": "baz"},
        ),
        # the target label is expanded too
        (
            [
                {
                    "source_labels": ["a"],
                    "regex": "f(o+)",
                    "target_label": "x_${1}",
                    "replacement": "$1",
                }
            ],
            {**BASE, "x_oo": "oo"},
        ),
        # Go's expansion: $1x names the group "1x" (empty), ${1}x is group 1 then x
        (
            [{"source_labels": ["a"], "regex": "(f)oo", "target_label": "d", "replacement": "$1x"}],
            BASE,
        ),
        (
            [
                {
                    "source_labels": ["a"],
                    "regex": "(f)oo",
                    "target_label": "d",
                    "replacement": "${1}x$$",
                }
            ],
            {**BASE, "d": "fx$"},
        ),
        # named groups
        (
            [
                {
                    "source_labels": ["a"],
                    "regex": "(?P<first>f)(?P<rest>.*)",
                    "target_label": "d",
                    "replacement": "$rest-${first}",
                }
            ],
            {**BASE, "d": "oo-f"},
        ),
        # a missing source label is the empty string
        (
            [{"source_labels": ["nope"], "regex": "", "target_label": "d", "replacement": "x"}],
            {**BASE, "d": "x"},
        ),
        # keep and drop
        ([{"source_labels": ["a"], "regex": "f.*", "action": "keep"}], BASE),
        ([{"source_labels": ["a"], "regex": "b.*", "action": "keep"}], None),
        ([{"source_labels": ["a"], "regex": "f.*", "action": "drop"}], None),
        ([{"source_labels": ["a"], "regex": "fo", "action": "drop"}], BASE),
        # hashmod (Prometheus' relabel_test.go: md5("baz") % 1000 = 976)
        (
            [
                {
                    "source_labels": ["c"],
                    "target_label": "d",
                    "action": "hashmod",
                    "modulus": 1000,
                }
            ],
            {**BASE, "d": "976"},
        ),
        # labelmap, labeldrop, labelkeep act on names
        (
            [{"regex": "__meta_(.+)", "action": "labelmap"}],
            {"__meta_zone": "eu", "zone": "eu"},
        ),
        ([{"regex": "b|c", "action": "labeldrop"}], {"a": "foo"}),
        ([{"regex": "b|c", "action": "labelkeep"}], {"b": "bar", "c": "baz"}),
        # keepequal / dropequal compare the joined value with the target label's value
        ([{"source_labels": ["a"], "target_label": "b", "action": "keepequal"}], None),
        ([{"source_labels": ["a"], "target_label": "b", "action": "dropequal"}], BASE),
        (
            [
                {"source_labels": ["a"], "target_label": "d", "replacement": "$1"},
                {"source_labels": ["a"], "target_label": "d", "action": "keepequal"},
            ],
            {**BASE, "d": "foo"},
        ),
        # lowercase / uppercase set the target label to the joined value
        (
            [{"source_labels": ["a", "b"], "target_label": "u", "action": "uppercase"}],
            {**BASE, "u": "FOO;BAR"},
        ),
        (
            [{"source_labels": ["nope"], "target_label": "a", "action": "lowercase"}],
            {"b": "bar", "c": "baz"},  # an empty result deletes the label
        ),
    ],
)
def test_relabel_like_prometheus(
    rules: list[dict[str, Any]], expected: dict[str, str] | None
) -> None:
    labels = {"__meta_zone": "eu"} if rules[0].get("action") == "labelmap" else BASE
    assert run(labels, *rules) == expected


def test_steps_read_what_the_previous_step_left() -> None:
    got = run(
        {"__address__": "10.0.0.1:9100", "__meta_dc": "fra"},
        {"source_labels": ["__meta_dc"], "target_label": "dc"},
        {"source_labels": ["dc"], "regex": "fra", "action": "keep"},
        {"regex": "__meta_.*", "action": "labeldrop"},
    )
    assert got == {"__address__": "10.0.0.1:9100", "dc": "fra"}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"action": "replace"}, "needs a target_label"),
        ({"action": "hashmod", "target_label": "x"}, "needs a modulus"),
        ({"action": "labeldrop", "regex": "x", "source_labels": ["a"]}, "takes only a regex"),
        ({"regex": "(", "target_label": "x"}, "not RE2"),
        ({"target_label": "1bad"}, "not a valid label name"),
        ({"action": "keepequal"}, "needs a target_label"),
        ({"action": "keepequal", "target_label": "a", "regex": "x"}, "takes only"),
        ({"action": "lowercase", "target_label": "${1}"}, "not a valid label name"),
        ({"action": "replace_all", "target_label": "a"}, "Input should be"),
    ],
)
def test_invalid_relabel_configs_are_refused(rule: dict[str, Any], message: str) -> None:
    cfg = {"scrape_configs": [{"job_name": "j", "relabel_configs": [rule]}]}
    with pytest.raises(ConfigError, match=message):
        ScrapeFile.parse(cfg)


def test_scrape_config_defaults_inheritance_and_checks() -> None:
    f = ScrapeFile.parse(
        {
            "global": {"scrape_interval": "30s", "scrape_timeout": "20s"},
            "rule_files": ["ignored.yml"],
            "remote_write": [{"url": "http://x"}],
            "scrape_configs": [
                {"job_name": "a"},
                {"job_name": "b", "scrape_interval": "10s"},
                {"job_name": "c", "scrape_interval": "1m30s", "body_size_limit": "10MB"},
            ],
        }
    )
    a, b, c = f.jobs()
    assert (a.interval_s, a.timeout_s) == (30, 20)
    assert (b.interval_s, b.timeout_s) == (10, 10)  # the global timeout cut to the interval
    assert (c.interval_s, c.body_size_limit) == (90, 10 * 1024 * 1024)
    assert (a.metrics_path, a.scheme, a.honor_labels, a.honor_timestamps) == (
        "/metrics",
        "http",
        False,
        True,
    )
    assert parse_size("512KiB") == 512 * 1024 and parse_size(100) == 100
    for bad, message in [
        ({"job_name": "x", "scrape_interval": "5s", "scrape_timeout": "10s"}, "greater than"),
        ({"job_name": "x", "kubernetes_sd_configs": []}, "not supported here"),
        ({"job_name": "x", "scrape_interval": "5 seconds"}, "invalid duration"),
        ({"job_name": "x", "metrics_path": "metrics"}, "must start with /"),
        ({"job_name": "x", "static_configs": [{"targets": [], "labels": {"1x": "y"}}]}, "label"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ScrapeFile.parse({"scrape_configs": [bad]})
    with pytest.raises(ConfigError, match="repeated: x"):
        ScrapeFile.parse({"scrape_configs": [{"job_name": "x"}, {"job_name": "x"}]})
    with pytest.raises(ConfigError, match="global"):
        ScrapeFile.parse({"global": {"scrape_interval": "5s"}})  # timeout 10s > 5s


def job(**kw: Any) -> Any:
    return ScrapeFile.parse({"scrape_configs": [{"job_name": "node", **kw}]}).jobs()[0]


def test_target_labels_as_prometheus_populates_them() -> None:
    j = job(scrape_interval="15s", params={"module": ["http_2xx"]})
    t, why = populate(j, {"env": "prod", "__meta_x": "y"}, "db1", [])
    assert t is not None, why
    # the port is defaulted, instance defaults to the address, __ labels stay private
    assert t.url == "http://db1:80/metrics?module=http_2xx"
    assert t.label_dict == {"env": "prod", "instance": "db1:80", "job": "node"}
    rules = compile_rules(
        [
            RelabelConfig(source_labels=["__address__"], target_label="__param_target"),
            RelabelConfig(target_label="__address__", replacement="prober:9115"),
            RelabelConfig(source_labels=["__param_target"], target_label="instance"),
            RelabelConfig(
                source_labels=["__scrape_interval__"], target_label="every", replacement="$1"
            ),
        ]
    )
    t, why = populate(j, {}, "example.org:443", rules)
    assert t is not None, why
    assert t.url == "http://prober:9115/metrics?module=http_2xx&target=example.org%3A443"
    assert t.label_dict == {"instance": "example.org:443", "job": "node", "every": "15s"}
    gone, why = populate(
        j, {}, "x:1", compile_rules([RelabelConfig(target_label="__address__", replacement="")])
    )
    assert gone is None and "no __address__" in why


def test_job_targets_dedupe_and_count_drops() -> None:
    j = job(
        static_configs=[{"targets": ["a:1", "a:1", "b:1"]}, {"targets": ["c:1"]}],
        relabel_configs=[{"source_labels": ["__address__"], "regex": "c:.*", "action": "drop"}],
    )
    jt = JobTargets(j, base=__import__("pathlib").Path("."), max_sd_bytes=1024)
    targets = jt.targets()
    assert sorted(t.url for t in targets) == ["http://a:1/metrics", "http://b:1/metrics"]
    assert jt.dropped == 1


def test_yaml_aliases_are_refused_in_configs_and_file_sd(tmp_path: Any) -> None:
    laughs = (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "scrape_configs: []\n"
    )
    cfg = tmp_path / "scrape.yml"
    cfg.write_text(laughs)
    with pytest.raises(ConfigError, match="aliases"):
        ScrapeFile.load(cfg)
    sd = tmp_path / "targets.yml"
    sd.write_text("- targets: &t ['a:1']\n- targets: *t\n")
    j = job(file_sd_configs=[{"files": ["targets.yml"]}])
    jt = JobTargets(j, base=tmp_path, max_sd_bytes=1 << 20)
    assert jt.targets() == [] and jt.file_sd is not None and jt.file_sd.errors == 1
    sd.write_text("- targets: ['a:1', 'b:1', 'c:1']\n")
    capped = JobTargets(j, base=tmp_path, max_sd_bytes=1 << 20, max_targets=2)
    assert len(capped.targets()) == 2 and capped.over == 1
