"""A real headless Chromium that measures a page's layout: the DevTools protocol over
``--remote-debugging-pipe`` (file descriptors 3 and 4, NUL-terminated JSON), so nothing
but the page's own URL is opened and no WebSocket client is needed."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any


class Browser:
    def __init__(self, chromium: str, profile: Path, width: int, height: int) -> None:
        to_child, self._send = os.pipe()
        self._receive, from_child = os.pipe()
        # above 4, so that moving one to 3 or 4 in the child never closes the other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]
        os.close(to_child)
        os.close(from_child)
        to_child, from_child = high

        def fds() -> None:  # the child reads commands on 3, writes answers on 4
            os.dup2(to_child, 3, inheritable=True)
            os.dup2(from_child, 4, inheritable=True)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=fds, pass_fds=(3, 4),  # kept open after fds() (preexec_fn) ran
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._id, self.session = b"", 0, ""
        self.width, self.height = width, height

    def call(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._send, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._next()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    def _next(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._receive, 65536)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(line))

    def open(self, url: str, timeout: float = 30.0) -> None:
        """A new tab at ``url``, attached, once it has loaded."""
        target = self.call("Target.createTarget", session=False, url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", session=False, targetId=target,
                                 flatten=True)["sessionId"]
        # a phone's width: headless windows are at least 500 px wide
        self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=self.width < 500)
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        loaded = "location.protocol !== 'about:' && document.readyState === 'complete'"
        while not self.evaluate(loaded):  # a new tab is about:blank, complete, at first
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load within {timeout} s")
            time.sleep(0.1)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(30)
        os.close(self._send)
        os.close(self._receive)
