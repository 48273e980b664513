"""deploy/proxy.py: the nginx.conf renderer and supervisor of the proxy container."""
from __future__ import annotations

import argparse
import re
import subprocess
import time

import pytest

from deploy_helpers import find_nginx, free_port, load_proxy_module, stop, wait_until

proxy = load_proxy_module()
NGINX = find_nginx()
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (CI installs Debian's nginx)")


def options(tmp_path, **overrides) -> argparse.Namespace:
    args = proxy.build_parser().parse_args(["render"])
    for key, value in dict(prefix=str(tmp_path / "nginx"), listen=f"127.0.0.1:{free_port()}", workers="1",
                           error_log=str(tmp_path / "error.log"), access_log=str(tmp_path / "access.log"),
                           nginx=NGINX or "nginx", **overrides).items():
        setattr(args, key, value)
    return args


def test_upstream_lists_are_parsed_strictly():
    assert proxy.parse_upstreams("a:1, b:2\n[::1]:3") == [("a", 1), ("b", 2), ("::1", 3)]
    for bad in ("", "a", "a:", ":80", "a:http", "a:70000"):
        with pytest.raises(ValueError):
            proxy.parse_upstreams(bad)


def test_addresses_are_resolved_sorted_and_deduplicated():
    found = proxy.resolve([("127.0.0.10", 2), ("127.0.0.9", 2), ("127.0.0.10", 2), ("::1", 5)])
    assert found == ["127.0.0.9:2", "127.0.0.10:2", "[::1]:5"]
    assert "127.0.0.1:7" in proxy.resolve([("localhost", 7)])


def test_every_placeholder_is_filled_and_none_may_be_missing(tmp_path):
    conf = proxy.write_config(options(tmp_path), ["127.0.0.1:1", "127.0.0.1:2"]).read_text()
    assert not proxy.PLACEHOLDER.search(conf)
    assert conf.count("server 127.0.0.1:") == 2
    assert re.search(r"hash \$lstm_route_key consistent;", conf)
    with pytest.raises(ValueError, match="LISTEN"):
        proxy.render("listen @@LISTEN@@;", {})
    with pytest.raises(ValueError, match="at least one"):
        proxy.write_config(options(tmp_path), [])


@needs_nginx
def test_rendered_file_passes_nginx_t(tmp_path):
    args = options(tmp_path)
    conf = proxy.write_config(args, ["127.0.0.1:1", "[::1]:2"])
    out = subprocess.run(proxy.nginx_command(args, conf) + ["-t"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


@needs_nginx
def test_a_changed_replica_set_rewrites_the_file_and_reloads_nginx(tmp_path):
    args = options(tmp_path, log_level="notice")
    first = ["127.0.0.1:1"]
    conf = proxy.write_config(args, first)
    nginx = subprocess.Popen(proxy.nginx_command(args, conf))
    try:
        wait_until(lambda: proxy.check(args) == 0, 10, "nginx did not start", nginx)
        assert proxy.refresh(args, [], first, nginx, lookup=lambda _: []) == first  # no answer: keep
        assert proxy.refresh(args, [], first, nginx, lookup=lambda _: list(first)) == first
        second = ["127.0.0.1:1", "127.0.0.1:2"]
        assert proxy.refresh(args, [], first, nginx, lookup=lambda _: second) == second
        assert conf.read_text().count("server 127.0.0.1:") == 2
        log = tmp_path / "error.log"
        deadline = time.monotonic() + 10
        while "reconfiguring" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "nginx never reloaded"
            time.sleep(0.1)
        assert nginx.poll() is None
    finally:
        assert stop(nginx) == 0
