"""Scrape targets read as an attacker would: what a service-discovery file or a
relabeling result can put in ``__address__`` and ``__metrics_path__`` must not move
the scrape to another host than the address names (the URL is built as text)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from monitoring.ingest.scrape_config import ScrapeFile
from monitoring.ingest.targets import populate


def job(**kw: Any) -> Any:
    return ScrapeFile.parse({"scrape_configs": [{"job_name": "node", **kw}]}).jobs()[0]


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1@evil.example", "10.0.0.1:80@evil.example", "u:p@10.0.0.1:80", "10.0.0.1#x",
     "10.0.0.1?x=1", "10.0.0.1\\@evil", "[::1]@evil.example", "10.0.0.1:80:81", "host:port"],
)  # fmt: skip
def test_an_address_that_is_not_host_and_port_is_refused(address: str) -> None:
    # a keep rule on __address__ =~ "10\.0\..*" let "10.0.0.1@evil.example" through to
    # evil.example (userinfo), as "#" or "?" would cut the path Prometheus puts after it
    t, why = populate(job(), {}, address, [])
    assert t is None and "invalid __address__" in why


@pytest.mark.parametrize(
    "address", ["db1", "db1:9100", "10.0.0.1:80", "[::1]:9100", "[fe80::1%eth0]:9", "a-b.c_d"]
)
def test_host_and_port_addresses_are_kept(address: str) -> None:
    t, why = populate(job(), {}, address, [])
    assert t is not None, why


@pytest.mark.parametrize("path", ["@evil.example/metrics", "evil", "/m?x=1#frag", "/a b"])
def test_a_metrics_path_cannot_move_the_host_or_add_a_query(path: str) -> None:
    # __metrics_path__ from a file_sd group's labels was appended as text after the
    # address: "@evil.example/metrics" made the address userinfo and evil.example the host
    t, why = populate(job(), {"__metrics_path__": path}, "10.0.0.1:9100", [])
    if t is None:
        assert "invalid __metrics_path__" in why
        return
    url = httpx.URL(t.url)
    assert (url.host, url.port) == ("10.0.0.1", 9100)
    assert urlsplit(t.url).query == "" and urlsplit(t.url).fragment == ""
