"""Server list normalisation, health transitions, the selection rule and reconfiguration."""

from __future__ import annotations

import json
import math

import pytest

from comfyui_client.backoff import Backoff
from comfyui_client.errors import ConfigError, ServerUnreachable
from comfyui_client.lock import Pins, check_job_server
from comfyui_client.pool import (
    Pool,
    ServerHealth,
    ServerSpec,
    due_for_probe,
    effective_load,
    normalize_servers,
    record_features,
    record_probe_failed,
    record_probe_ok,
    record_queue,
    select_server,
    server_key,
)

# --------------------------------------------------------------------------- URLs

GOOD = [
    ("http://127.0.0.1:8188", "http://127.0.0.1:8188"),
    ("http://127.0.0.1:8188/", "http://127.0.0.1:8188"),
    ("HTTP://Example.COM:8188//", "http://example.com:8188"),
    ("https://gpu.example.com/comfy/", "https://gpu.example.com/comfy"),
    ("https://Host.example/Prefix/Api/", "https://host.example/Prefix/Api"),  # path case kept
    ("  http://a:1  ", "http://a:1"),
    ("http://[::1]:8188/", "http://[::1]:8188"),
    ("http://comfy_1:8188", "http://comfy_1:8188"),
    ("http://a:80", "http://a:80"),  # an explicit port is kept as written
    ("https://a", "https://a"),
]


@pytest.mark.parametrize(("raw", "key"), GOOD)
def test_good_urls_normalise(raw: str, key: str) -> None:
    assert normalize_servers([raw]) == (ServerSpec(url=key),)
    assert server_key(raw) == key


BAD = [
    ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("ws://a:8188", "scheme 'ws' is not allowed"),
    ("wss://a", "scheme 'wss' is not allowed"),
    ("ftp://a", "scheme 'ftp' is not allowed"),
    ("127.0.0.1:8188", "has no scheme"),
    ("localhost:8188", "has no scheme"),
    ("myhost:8188", "has no scheme"),
    ("http://", "has no host"),
    ("http://:8188", "has no host"),
    ("http://user:pw@host:8188", "embeds credentials"),
    ("http://a:8188/?token=x", "has a query or fragment"),
    ("http://a:8188?", "has a query or fragment"),
    ("http://a#top", "has a query or fragment"),
    ("http://a:99999", "has an invalid port"),
    ("http://a:port", "has an invalid port"),
    ("http://a:0", "has port 0"),
    ("http://a b:8188", "contains whitespace"),
    ("http://a!b", "has an invalid host"),
    ("", "the URL is empty"),
    ("   ", "the URL is empty"),
]


@pytest.mark.parametrize(("raw", "text"), BAD)
def test_bad_urls_are_rejected_with_the_reason(raw: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_servers(["http://ok:1", raw])
    assert text in str(info.value)
    assert "servers[1]" in str(info.value)  # names the offending entry
    assert info.value.hint  # and says what to do


def test_ws_scheme_hint_explains_the_websocket_is_derived() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_servers(["ws://a:8188"])
    assert "derives the WebSocket URL" in str(info.value)


@pytest.mark.parametrize("raw", ["http://user:hunter2@host", "http://a/?token=hunter2"])
def test_errors_never_echo_credentials(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_servers([raw])
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in json.dumps(info.value.to_dict())


def test_credentials_hint_points_to_token_option() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_servers(["http://u:p@h"])
    assert "token" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("config", "text"),
    [
        ([], "servers is empty"),
        ("http://a:8188", "wrap the URL in a list"),
        (None, "servers must be a list"),
        ({"url": "http://a"}, "servers must be a list"),
        ([42], "expected a URL string or an object"),
        ([{"weight": 2}], "has no 'url'"),
        ([{"url": "http://a", "wieght": 2}], "unknown key(s) 'wieght'"),
        ([{"url": 5}], "the URL must be a string"),
    ],
)
def test_bad_config_shapes(config: object, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_servers(config)
    assert text in str(info.value)


@pytest.mark.parametrize("weight", [0, -1, math.nan, math.inf, "2", True])
def test_weight_must_be_positive_finite_number(weight: object) -> None:
    with pytest.raises(ConfigError, match="weight must be a"):
        normalize_servers([{"url": "http://a", "weight": weight}])


@pytest.mark.parametrize(
    "config",
    [
        ["http://a:8188", "HTTP://A:8188/"],
        ["http://a", "http://a:80"],  # the default port is the same server
        ["https://a/", "https://a:443"],
        [{"url": "http://a/p/"}, "http://a/p"],
    ],
)
def test_duplicates_after_normalisation_are_rejected(config: list) -> None:
    with pytest.raises(ConfigError, match=r"servers\[1\]: .* duplicates servers\[0\]"):
        normalize_servers(config)


def test_same_host_different_scheme_port_or_prefix_are_distinct() -> None:
    specs = normalize_servers(["http://a", "https://a", "http://a:8188", "http://a/x"])
    assert [s.url for s in specs] == ["http://a", "https://a", "http://a:8188", "http://a/x"]


def test_dict_entries_and_specs() -> None:
    specs = normalize_servers([
        {"url": "http://A:1/", "weight": 2, "label": "gpu", "token": "s3cret"},
        "http://b:2",
        ServerSpec(url="http://C:3/", weight=0.5),
    ])
    assert specs[0] == ServerSpec(url="http://a:1", weight=2.0, label="gpu", token="s3cret")
    assert specs[1] == ServerSpec(url="http://b:2")
    assert specs[2] == ServerSpec(url="http://c:3", weight=0.5)
    assert "s3cret" not in repr(specs[0])  # a logged spec never shows the token


def test_bad_token_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_servers([{"url": "http://a", "token": ""}])
    assert "token must be a non-empty string" in str(info.value)


def test_server_key_rejects_like_normalize() -> None:
    with pytest.raises(ConfigError, match="scheme 'ws'"):
        server_key("ws://a")


# --------------------------------------------------------------------------- health

BACKOFF = Backoff(base=1.0, factor=2.0, cap=8.0, jitter=0.5)


def test_probe_ok_marks_up_with_details() -> None:
    h = record_probe_ok(ServerHealth(), now=10.0, latency_ms=12.5, version="0.3.40",
                        devices=[{"name": "cpu", "type": "cpu"}, None, "cuda:0"],
                        queue_remaining=3, probe_interval=30.0)
    assert (h.state, h.reason, h.version, h.devices) == ("up", None, "0.3.40", ("cpu", "cuda:0"))
    assert (h.queue_remaining, h.last_latency_ms, h.next_probe_at) == (3, 12.5, 40.0)
    assert h.consecutive_failures == 0 and h.last_ok_at == 10.0


def test_probe_failed_marks_down_and_backs_off() -> None:
    h = ServerHealth()
    h1 = record_probe_failed(h, now=100.0, reason="connection refused", backoff=BACKOFF)
    assert (h1.state, h1.reason, h1.consecutive_failures) == ("down", "connection refused", 1)
    assert h1.next_probe_at == 101.0 and h1.first_failure_at == 100.0
    h2 = record_probe_failed(h1, now=101.0, reason="timeout", backoff=BACKOFF, rand=0.5)
    assert h2.consecutive_failures == 2 and h2.reason == "timeout"
    assert h2.next_probe_at == pytest.approx(101.0 + 2.0 * 0.75)
    assert h2.first_failure_at == 100.0  # the streak keeps its start
    h3 = h2
    for _ in range(10):
        h3 = record_probe_failed(h3, now=200.0, reason="x", backoff=BACKOFF)
    assert h3.next_probe_at == 208.0  # capped
    ok = record_probe_ok(h3, now=300.0, latency_ms=1.0)
    assert ok.state == "up" and ok.consecutive_failures == 0 and ok.first_failure_at is None
    assert ok.reason is None


def test_record_queue_updates_depth_only() -> None:
    down = record_probe_failed(ServerHealth(), now=0.0, reason="r", backoff=BACKOFF)
    h = record_queue(down, 4)
    assert h.queue_remaining == 4 and h.state == "down"
    assert record_queue(h, 4) is h
    for bad in (-1, None, "3", 2.5, True):
        assert record_queue(h, bad) is h


def test_record_features_keeps_positive_int_limit() -> None:
    assert record_features(ServerHealth(), max_upload_size=104857600).max_upload_size == 104857600
    assert record_features(ServerHealth(), max_upload_size="big").max_upload_size is None


def test_due_for_probe() -> None:
    assert due_for_probe(ServerHealth(), now=0.0)  # never probed
    up = record_probe_ok(ServerHealth(), now=0.0, latency_ms=1, probe_interval=30.0)
    assert not due_for_probe(up, 29.9)
    assert due_for_probe(up, 30.0)
    down = record_probe_failed(up, now=50.0, reason="r", backoff=BACKOFF)
    assert not due_for_probe(down, 50.5) and due_for_probe(down, 51.0)


# --------------------------------------------------------------------------- selection


def _specs(*items: tuple[str, float]) -> tuple[ServerSpec, ...]:
    return tuple(ServerSpec(url=u, weight=w) for u, w in items)


def _up(queue: int | None = 0) -> ServerHealth:
    return record_probe_ok(ServerHealth(), now=0.0, latency_ms=1.0, queue_remaining=queue)


def _down(reason: str) -> ServerHealth:
    return record_probe_failed(ServerHealth(), now=0.0, reason=reason, backoff=BACKOFF)


def test_least_queue_wins() -> None:
    specs = _specs(("http://a", 5), ("http://b", 1), ("http://c", 1))
    health = {"http://a": _up(2), "http://b": _up(1), "http://c": _up(0)}
    assert select_server(specs, health).url == "http://c"


def test_queue_tie_broken_by_higher_weight() -> None:
    specs = _specs(("http://a", 1), ("http://b", 1), ("http://c", 2))
    health = {"http://a": _up(2), "http://b": _up(1), "http://c": _up(1)}
    assert select_server(specs, health).url == "http://c"


def test_queue_and_weight_tie_broken_by_config_order() -> None:
    specs = _specs(("http://a", 1), ("http://b", 3), ("http://c", 3))
    health = {u: _up(0) for u in ("http://a", "http://b", "http://c")}
    assert select_server(specs, health).url == "http://b"


def test_unknown_queue_counts_as_empty() -> None:
    specs = _specs(("http://a", 1), ("http://b", 1))
    health = {"http://a": _up(1), "http://b": _up(None)}
    assert select_server(specs, health).url == "http://b"


def test_own_inflight_jobs_count_when_queue_lags() -> None:
    specs = _specs(("http://a", 1), ("http://b", 1))
    health = {"http://a": _up(0), "http://b": _up(1)}
    assert select_server(specs, health).url == "http://a"
    # we just sent 2 jobs to a; its WS status still says 0
    assert select_server(specs, health, inflight={"http://a": 2}).url == "http://b"


def test_load_is_max_not_sum_of_queue_and_inflight() -> None:
    specs = _specs(("http://a", 1), ("http://b", 1))
    # a: server already counts our 2 jobs (queue 2); b: 3 queued by others
    health = {"http://a": _up(2), "http://b": _up(3)}
    assert effective_load(health["http://a"], 2) == 2
    assert select_server(specs, health, inflight={"http://a": 2}).url == "http://a"


def test_unknown_servers_used_only_when_none_is_up() -> None:
    specs = _specs(("http://a", 1), ("http://b", 1), ("http://c", 1))
    none_up = {"http://a": _down("refused"), "http://b": ServerHealth()}  # c: missing=unknown
    assert select_server(specs, none_up).url == "http://b"
    one_up = {"http://a": _up(9), "http://b": ServerHealth(), "http://c": ServerHealth()}
    assert select_server(specs, one_up).url == "http://a"  # busy but up beats unknown


def test_down_never_chosen_and_all_down_lists_reasons() -> None:
    specs = _specs(("http://a", 10), ("http://b", 1))
    health = {"http://a": _down("connection refused"), "http://b": _up(50)}
    assert select_server(specs, health).url == "http://b"
    health["http://b"] = _down("timeout after 30s")
    with pytest.raises(ServerUnreachable) as info:
        select_server(specs, health)
    text = str(info.value)
    assert "http://a: down (connection refused)" in text
    assert "http://b: down (timeout after 30s)" in text
    assert info.value.details["servers"] == {
        "http://a": "down (connection refused)", "http://b": "down (timeout after 30s)",
    }


def test_exclude_skips_servers_and_is_reported() -> None:
    specs = _specs(("http://a", 1), ("http://b", 1))
    health = {"http://a": _up(0), "http://b": _up(5)}
    assert select_server(specs, health, exclude={"http://a"}).url == "http://b"
    assert select_server(specs, health, exclude="http://a").url == "http://b"
    with pytest.raises(ServerUnreachable, match="http://a: excluded"):
        select_server(specs, health, exclude=["http://a", "http://b"])


def test_no_servers_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        select_server((), {})


def test_selection_over_32_servers() -> None:
    specs = tuple(ServerSpec(url=f"http://s{i}:8188") for i in range(32))
    health = {s.url: _up(5) for s in specs}
    health["http://s17:8188"] = _up(1)
    health["http://s30:8188"] = _up(1)
    assert select_server(specs, health).url == "http://s17:8188"
    inflight = {"http://s17:8188": 3}
    assert select_server(specs, health, inflight=inflight).url == "http://s30:8188"


# --------------------------------------------------------------------------- the pool


def test_pool_create_and_updates_touch_one_server() -> None:
    pool = Pool.create(["http://a", {"url": "http://b", "token": "t"}])
    assert {k: h.state for k, h in pool.healths.items()} == {"http://a": "unknown",
                                                              "http://b": "unknown"}
    p2 = pool.probe_ok("http://a", now=1.0, latency_ms=3.0, queue_remaining=0)
    assert p2.health_of("http://a").state == "up"
    assert p2.health_of("http://b") is pool.health_of("http://b")
    assert pool.health_of("http://a").state == "unknown"  # the old value is unchanged
    p3 = p2.probe_failed("http://b", now=2.0, reason="refused", backoff=BACKOFF, rand=0.0)
    assert p3.health_of("http://b").state == "down"
    assert p3.queue_update("http://a", 7).health_of("http://a").queue_remaining == 7
    assert p3.with_latency("http://a", 9.0).health_of("http://a").last_latency_ms == 9.0
    assert p3.with_features("http://a", max_upload_size=10).max_upload_size("http://a") == 10
    assert p3.queue_update("http://zzz", 1) is p3  # unknown server: nothing to update
    assert p3.select().url == "http://a"
    assert pool.spec("http://b").token == "t"
    json.dumps(p3.describe())


def test_reconfigure_keeps_a_removed_server_draining_while_pinned() -> None:
    pool = Pool.create(["http://a", {"url": "http://b", "token": "tok-b"}, "http://c"])
    pool = pool.probe_ok("http://b", now=0.0, latency_ms=1.0, queue_remaining=0)
    pool = pool.probe_ok("http://a", now=0.0, latency_ms=1.0, queue_remaining=5)
    pins = Pins().pin("job-1", "http://b")

    new, removed, added = pool.reconfigure(["http://a", "http://d"],
                                           set(pins.servers_in_use()))
    assert removed == ("http://b", "http://c")
    assert added == ("http://d",)
    assert [s.url for s in new.specs] == ["http://a", "http://d"]
    assert new.is_draining("http://b") and not new.is_draining("http://c")
    # b is idle and up, a is busy: b would win, but draining is never selectable
    assert new.select().url == "http://a"
    # ...while job-1 keeps running there, with b's own token and health
    assert new.spec("http://b").token == "tok-b"
    assert new.health_of("http://b").state == "up"
    check_job_server(pins, "job-1", "history", "http://b")
    assert pins.jobs_on("http://b") == ("job-1",)
    # c had no jobs: forgotten
    assert new.spec("http://c") is None and new.health_of("http://c") is None
    # a kept its health across the reconfiguration
    assert new.health_of("http://a").queue_remaining == 5

    # still pinned: a second reconfiguration keeps b draining
    again, _, _ = new.reconfigure(["http://a"], {"http://b"})
    assert again.is_draining("http://b")
    # once unpinned, b goes away
    pins = pins.unpin("job-1")
    settled, dropped = new.release_drained(set(pins.servers_in_use()))
    assert dropped == ("http://b",) and settled.spec("http://b") is None
    gone, _, _ = new.reconfigure(["http://a"], set())
    assert gone.draining == ()


def test_reconfigure_can_bring_a_draining_server_back() -> None:
    pool = Pool.create(["http://a", "http://b"])
    mid, _, _ = pool.reconfigure(["http://a"], {"http://b"})
    back, removed, added = mid.reconfigure(["http://a", "http://b"], {"http://b"})
    assert added == ("http://b",) and removed == ()
    assert not back.is_draining("http://b") and [s.url for s in back.specs] == [
        "http://a", "http://b"]


def test_reconfigure_validates_the_new_list() -> None:
    pool = Pool.create(["http://a"])
    with pytest.raises(ConfigError, match="servers is empty"):
        pool.reconfigure([], set())


@pytest.mark.parametrize("url", ["http://[::1", "http://[-//::1", "https://]:8188",
                                 "http://[::1]x:8188", "http://h:8188:9", "http://h:８１"])
def test_malformed_hosts_and_ports_are_config_errors_not_crashes(url):
    """urlsplit raised a bare ValueError for an unclosed IPv6 bracket; the client's own
    splitter answers every malformed URL with the same clear ConfigError."""
    with pytest.raises(ConfigError) as info:
        normalize_servers([url])
    assert "http://" in info.value.message or "host" in info.value.message \
        or "port" in info.value.message


@pytest.mark.parametrize(("url", "key"), [
    ("HTTP://LocalHost:8188/", "http://localhost:8188"),
    ("https://[::1]:8443/comfy/", "https://[::1]:8443/comfy"),
    ("http://gpu1/", "http://gpu1"),
    ("http://10.0.0.2:80/a/b", "http://10.0.0.2:80/a/b"),
])
def test_normalised_keys(url, key):
    assert normalize_servers([url])[0].url == key
