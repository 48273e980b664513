"""python -m lstm_service.service.edge.web.screenshot --url http://127.0.0.1:8080/ --text "..." --out page.png

Types ``--text`` into a running explain page (a server started with
--http-port) in headless Chromium, picks the layer, channel and unit, waits
for the colours and predictions, and saves a PNG of the page (docs/explain.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .browser import BrowserError, Chromium


# Sets a control and returns "" or, when the page does not offer the value, what it does offer.
PICK = """(() => {
  const e = document.getElementById(%s), v = %s;
  if (e.tagName === 'SELECT') {
    const offered = [...e.options].map((o) => o.value);
    if (!offered.includes(v)) return offered.join(', ');
  } else if (!/^[0-9]+$/.test(v) || Number(v) < Number(e.min || 0) || (e.max !== '' && Number(v) > Number(e.max))) {
    return `${e.min || 0} to ${e.max}`;
  }
  e.value = v;
  e.dispatchEvent(new Event('change'));
  return '';
})()"""


def pick(page, field: str, value: str) -> str:
    return str(page.evaluate(PICK % (json.dumps(field), json.dumps(value))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lstm_service.service.edge.web.screenshot",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the page, e.g. http://127.0.0.1:8080/")
    p.add_argument("--text", required=True, help="text to type (\\n for a newline)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--layer", type=int, help="layer to show, counted from 0 (default: the page's, the top layer)")
    p.add_argument("--channel", help="channel to show (default: the page's, c or h)")
    p.add_argument("--unit", type=int, default=0, help="unit to colour by")
    args = p.parse_args(argv)
    text = args.text.replace("\\n", "\n")
    try:
        with Chromium.start() as browser:
            page = browser.open(args.url)
            page.wait_for("document.querySelectorAll('#channel option').length > 0")
            for field, value in (("layer", args.layer), ("channel", args.channel), ("unit", args.unit)):
                if value is not None:
                    refused = pick(page, field, str(value))
                    if refused:  # a select set to a value it lacks goes blank: the PNG would show nothing
                        print(f"error: --{field} {value} is not on the page; allowed: {refused}", file=sys.stderr)
                        return 2
            page.type_text("#input", text)
            want = len(text.encode("utf-8"))
            page.wait_for(f"document.querySelectorAll('#text-view .tok').length === {want} && "
                          "document.querySelectorAll('#predictions li').length > 0")
            args.out.write_bytes(page.screenshot())
    except BrowserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
