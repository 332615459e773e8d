"""A headless Chromium driven over the DevTools protocol, to check report pages: load a page, collect its console
errors, read values from it and take a screenshot. ``CHROMIUM`` is None where no browser is installed; the
websocket client is in the ``dev`` extra."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _normal_scheduling() -> None:
    """Start the browser under the normal scheduler: one inheriting a real-time policy (SCHED_FIFO) from its
    parent spins its thread pools at that priority, starves the process waiting on it and never answers."""
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


class Page:
    """One tab of a fresh headless browser (its own profile), closed with the context."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.errors: list[str] = []

    def __enter__(self) -> Page:
        import websocket  # websocket-client (dev extra)

        self.profile = tempfile.mkdtemp(prefix="vlagym-chromium-")
        self.proc = subprocess.Popen(
            # No zygote: a forked zygote once spun in the kernel here, unkillable, after a test had timed out.
            [CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-zygote", "--no-first-run",
             "--mute-audio", "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={self.profile}",
             "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1600", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_normal_scheduling)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + self.timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{CHROMIUM} did not start (exit code {self.proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        while True:  # the first tab appears a moment after the port file
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            pages = [t for t in targets if t.get("type") == "page"]
            if pages or time.time() > deadline:
                break
            time.sleep(0.1)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=self.timeout,
                                              suppress_origin=True)
        self._id = 0
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    def _event(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                           for a in p["args"]))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append(f"{p['entry']['source']}: {p['entry']['text']} {p['entry'].get('url', '')}")

    def call(self, method: str, wait_for: str | None = None, **params) -> dict[str, Any]:
        """Send one command and return its result (and, with ``wait_for``, also wait for that event)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        result, seen = None, wait_for is None
        deadline = time.time() + self.timeout  # events keep coming while the answer may not: bound the wait
        while result is None or not seen:
            if time.time() > deadline:
                raise TimeoutError(f"{method}: Chromium did not answer{' and ' + wait_for if wait_for else ''} "
                                   f"within {self.timeout:.0f} s")
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result = msg["result"]
            else:
                self._event(msg)
                seen = seen or msg.get("method") == wait_for
        return result

    def open(self, path: Path) -> None:
        self.call("Page.navigate", wait_for="Page.loadEventFired", url=path.resolve().as_uri())

    def evaluate(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:60]}...: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])


VIDEO_WIDTHS = """
Promise.all(Array.from(document.querySelectorAll('video')).map(v => new Promise(done => {
  const report = () => done({src: v.currentSrc, width: v.videoWidth, height: v.videoHeight,
                             error: v.error ? v.error.code + ' ' + v.error.message : null});
  if (v.readyState >= 2) { report(); return; }
  v.addEventListener('loadeddata', report); v.addEventListener('error', report);
  v.play().catch(() => {}); setTimeout(report, 20000);
})))
"""
"""Resolves, per <video>, to its decoded size once its first frame is decoded (or its error)."""
