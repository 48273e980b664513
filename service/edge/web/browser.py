"""Drive a headless Chromium through the DevTools protocol over a pipe
(--remote-debugging-pipe: commands on the browser's fd 3, replies on fd 4,
each a JSON message ended by a NUL byte). Standard library only, so the
browser test and the screenshot need Debian's `chromium` and nothing else.

    with Chromium.start() as browser:
        page = browser.open("http://127.0.0.1:8080/")
        page.type_text("#input", "hello")
        page.evaluate("document.title")
        png = page.screenshot()
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any, Dict, Optional

BINARIES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe")


class BrowserError(Exception):
    """Chromium is missing, died, or a DevTools command failed."""


def find_chromium() -> Optional[str]:
    return next((path for path in map(shutil.which, BINARIES) if path), None)


class Chromium:
    def __init__(self, binary: str, width: int = 1100, height: int = 760) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")  # a fresh --user-data-dir
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium expects the pipe on fds 3 and 4: hand it over as stdin/stdout and let the
        # shell move it there (fd numbers above 9 are not portable in sh redirections).
        script = 'exec "$@" 3<&0 4>&1 </dev/null >/dev/null'
        self.process = subprocess.Popen(
            ["sh", "-c", script, "sh", binary, *FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=to_browser_r, stdout=from_browser_w, stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.width, self.height = width, height
        self._next_id = 0
        self._replies: Dict[int, dict] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_forever, name="cdp-reader", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, **size) -> "Chromium":
        binary = find_chromium()
        if binary is None:
            raise BrowserError(
                f"no Chromium found (looked for {', '.join(BINARIES)}); Debian: apt-get install chromium")
        return cls(binary, **size)

    def _read_forever(self) -> None:
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        with self._cond:
                            self._replies[message["id"]] = message
                            self._cond.notify_all()
        with self._cond:
            self._replies[-1] = {"error": {"message": "Chromium closed its DevTools pipe"}}
            self._cond.notify_all()

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
             timeout: float = 30.0) -> dict:
        with self._cond:
            self._next_id += 1
            call_id = self._next_id
        message: Dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while call_id not in self._replies and -1 not in self._replies:
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise BrowserError(f"no reply to {method} within {timeout:g}s")
            reply = self._replies.pop(call_id, None) or self._replies[-1]
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def open(self, url: str) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        page.call("Page.navigate", {"url": url})
        page.wait_for("document.readyState === 'complete'")
        return page

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except BrowserError:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    def call(self, method: str, params: Optional[dict] = None) -> dict:
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if a promise), as JSON."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]!r} threw: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"{expression[:80]!r} still false after {timeout:g}s")
            time.sleep(0.05)

    def type_text(self, selector: str, text: str) -> None:
        """Clear the field, then type ``text`` a character at a time, as a person would."""
        self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); "
                      "e.value = ''; e.dispatchEvent(new Event('input')); return true; })()")
        for char in text:
            if char == "\n":
                self.call("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Enter", "code": "Enter",
                                                     "windowsVirtualKeyCode": 13, "text": "\r"})
                self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Enter", "code": "Enter",
                                                     "windowsVirtualKeyCode": 13})
            else:
                self.call("Input.insertText", {"text": char})

    def screenshot(self) -> bytes:
        """A PNG of the whole page."""
        height = int(self.evaluate("Math.ceil(document.body.getBoundingClientRect().bottom) + 16"))
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.browser.width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])
