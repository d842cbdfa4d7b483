"""Headless Chromium driven over the DevTools protocol (websockets, no browser download): open a
page, read it, fill a form as a person would, for the tests that need a real browser's cookies,
redirects and scripts."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import httpx
from conftest import free_port, wait_until

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1800"]


class Browser:
    def __init__(self, profile: Path):
        chromium = shutil.which("chromium")
        assert chromium, "Debian's chromium is needed (make test installs it when missing)"
        self.port = free_port()
        self.proc = subprocess.Popen([chromium, *FLAGS, f"--remote-debugging-port={self.port}",
                                      f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        page = wait_until(self._page_target, 60, "Chromium's DevTools endpoint", every=0.2)
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.ids = itertools.count(1)

    def _page_target(self):
        try:
            targets = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=5).json()
        except httpx.HTTPError:
            return None
        return next((t for t in targets if t["type"] == "page"), None)

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == msg_id:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        wait_until(lambda: self.js("document.readyState") == "complete", 60, f"{url} to load", every=0.1)

    def wait_for(self, expression: str, what: str, timeout: float = 60):
        return wait_until(lambda: self.js(expression), timeout, what, every=0.2)

    def type_into(self, selector: str, text: str) -> None:
        """Focus the field and type, key by key, as a person's keyboard would (the page's own
        handlers see every keystroke)."""
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
