"""The explain page (--http-port): its JSON endpoint over a real server, and
the page itself in headless Debian Chromium: a text is typed, and the
coloured characters and the predictions read out of the DOM are the ones
the Explain RPC gives for the same text."""
import asyncio
import json
import re
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest

from lstm_service.service.proto.lstm.v1 import lstm_pb2 as pb
from lstm_service.service.edge.web.browser import Chromium, find_chromium
from svc_helpers import serving

TEXT = "To be, or not"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_http_is_off_by_default(tiny_model_dir):
    async with serving(tiny_model_dir) as s:
        assert s.app.http is None


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def test_page_and_model_are_served(tiny_model_dir):
    async with serving(tiny_model_dir, http_port=free_port()) as s:
        base = f"http://127.0.0.1:{s.app.http.port}"
        status, kind, body = await asyncio.to_thread(get, f"{base}/")
        assert status == 200 and kind.startswith("text/html") and b'src="explain.js"' in body
        status, kind, body = await asyncio.to_thread(get, f"{base}/explain.js")
        assert status == 200 and kind.startswith("text/javascript") and b"api/explain" in body
        status, _, body = await asyncio.to_thread(get, f"{base}/api/model")
        assert status == 200 and json.loads(body)["model"]["name"] == "tiny-lstm"
        status, _, body = await asyncio.to_thread(get, f"{base}/etc/passwd")
        assert status == 404 and json.loads(body)["code"] == "NOT_FOUND"


async def test_json_endpoint_bridges_to_explain_with_its_status_codes(tiny_model_dir):
    async with serving(tiny_model_dir, http_port=free_port()) as s:
        base = f"http://127.0.0.1:{s.app.http.port}"
        status, reply = await asyncio.to_thread(post, f"{base}/api/explain", {
            "input": {"text": "abc"}, "layers": [1], "channels": ["h"], "unit_range": {"start": 4, "end": 6}})
        assert status == 200 and len(reply["tokens"]) == 3
        grpc_reply = await s.stub.Explain(pb.ExplainRequest(
            input=pb.Input(text="abc"), layers=[1], channels=["h"], unit_range=pb.UnitRange(start=4, end=6)))
        np.testing.assert_allclose(reply["layers"][0]["channels"][0]["values"],
                                   grpc_reply.layers[0].channels[0].values, rtol=1e-6)
        status, reply = await asyncio.to_thread(post, f"{base}/api/explain", {"input": {"text": "abc"}, "top_units": 99})
        assert status == 400 and reply["code"] == "INVALID_ARGUMENT" and "1 to 32" in reply["message"]
        status, reply = await asyncio.to_thread(post, f"{base}/api/explain", {"input": {"text": "a"}, "bogus": 1})
        assert status == 400 and "ExplainRequest" in reply["message"]
        status, reply = await asyncio.to_thread(post, f"{base}/api/explain",
                                                {"session_id": "no-such-session-0000", "input": {"text": "a"}})
        assert status == 404 and reply["code"] == "NOT_FOUND"


def rgb(style: str):
    return tuple(int(x) for x in re.findall(r"\d+", style)[:3])


def drive_page(url: str, text: str) -> dict:
    """Type ``text`` into the page, then read the coloured characters and predictions (blocking)."""
    with Chromium.start() as browser:
        page = browser.open(url)
        page.wait_for("document.querySelectorAll('#channel option').length > 0")
        page.type_text("#input", text)
        page.wait_for(f"document.querySelectorAll('#text-view .tok').length === {len(text)} && "
                      "document.querySelectorAll('#predictions li').length === 5")
        read = """JSON.stringify({
            chars: [...document.querySelectorAll('#text-view .tok')].map(s => ({
                text: s.textContent, value: Number(s.dataset.value), colour: s.style.backgroundColor})),
            predictions: [...document.querySelectorAll('#predictions li')].map(li => ({
                token: Number(li.dataset.token), prob: Number(li.dataset.prob)})),
            forget: JSON.parse(document.querySelector('svg[data-summary=forget]').dataset.values),
            layer: document.getElementById('layer').value, channel: document.getElementById('channel').value,
            unit: document.getElementById('unit').value})"""
        return json.loads(page.evaluate(read))


@pytest.mark.skipif(find_chromium() is None, reason="Debian's chromium is not installed (apt-get install chromium); "
                    ".ci/run installs it")
async def test_page_colours_typed_text_and_shows_predictions(tiny_model_dir):
    async with serving(tiny_model_dir, http_port=free_port()) as s:
        # The browser blocks: run it in a thread so this loop keeps serving its calls.
        seen = await asyncio.to_thread(drive_page, f"http://127.0.0.1:{s.app.http.port}/", TEXT)
        assert (seen["layer"], seen["channel"], seen["unit"]) == ("1", "c", "0")  # the page's defaults
        want = await s.stub.Explain(pb.ExplainRequest(input=pb.Input(text=TEXT), layers=[1], channels=["c"],
                                                      unit_range=pb.UnitRange(start=0, end=1), top_k=5))
        assert "".join(c["text"] for c in seen["chars"]) == TEXT
        np.testing.assert_allclose([c["value"] for c in seen["chars"]], want.layers[0].channels[0].values, rtol=1e-5)
        for char in seen["chars"]:
            red, _, blue = rgb(char["colour"])
            if abs(char["value"]) > 0.05:  # visibly coloured: blue for positive, red for negative
                assert (blue > red) if char["value"] > 0 else (red > blue), char
        last = want.tokens[-1].top
        assert [p["token"] for p in seen["predictions"]] == [c.token for c in last]
        np.testing.assert_allclose([p["prob"] for p in seen["predictions"]], [c.prob for c in last], rtol=1e-5)
        np.testing.assert_allclose(seen["forget"], want.layers[0].mean_forget, rtol=1e-5)


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (make system-deps)")
async def test_the_screenshot_tool_refuses_a_layer_the_page_does_not_offer(tiny_model_dir, tmp_path, capsys):
    """docs/explain.md's recipe once asked for --layer 2 of a 2-layer model: the select went blank
    and the tool still wrote a PNG and exited 0. Now it names what the page offers, and exits 2."""
    from lstm_service.service.edge.web import screenshot

    async with serving(tiny_model_dir, http_port=free_port()) as s:
        url = f"http://127.0.0.1:{s.app.http.port}/"
        out = tmp_path / "page.png"

        async def shoot(*flags) -> int:
            return await asyncio.to_thread(screenshot.main, ["--url", url, "--text", "ab", "--out", str(out), *flags])

        assert await shoot("--layer", "2") == 2
        assert "--layer 2 is not on the page; allowed: 0, 1" in capsys.readouterr().err
        assert not out.exists()
        assert await shoot("--unit", "32") == 2
        assert "--unit 32 is not on the page; allowed: 0 to 31" in capsys.readouterr().err
        assert await shoot("--layer", "1", "--channel", "c", "--unit", "3") == 0, capsys.readouterr().err
        assert out.read_bytes().startswith(b"\x89PNG")
