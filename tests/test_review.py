"""`review.html` (pipelines/report/review.py): a self-contained page per video; in headless Chromium a click on a
segment seeks the real video there and outlines that segment. Chromium is driven over the DevTools protocol on a
pipe (`--remote-debugging-pipe`: JSON messages, NUL-terminated, on file descriptors 3 and 4), so no driver
package is needed; the browser test skips when Chromium is not installed (`apt-get install -y chromium`)."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import requires_shared, shortest_clip
from pipelines.report.review import render_review, write_review

TIMELINE = pd.DataFrame({"label": ["nodding", "(nobody)", "shaking head"], "start_s": [0.0, 0.5, 1.2],
                         "end_s": [0.5, 1.2, 50 / 30], "score": [0.91, float("nan"), 0.62]})
TRUTH = pd.DataFrame({"label": ["nodding", "shaking head"], "start_s": [0.1, 1.0], "end_s": [0.6, 1.6]})


def test_the_page_is_self_contained_with_both_tracks(tmp_path):
    video = tmp_path / "videos" / "talk.mp4"
    page = tmp_path / "results" / "talk" / "review.html"
    text = render_review("talk", video, page, TIMELINE, 50 / 30, TRUTH)
    assert 'src="../../videos/talk.mp4"' in text  # relative to the page
    for outside in ("http://", "https://", "<script src", "<link", "@import"):
        assert outside not in text, outside  # opens from disk offline
    predicted, annotated = text.split('id="track-predicted"')[1].split('id="track-annotated"')
    assert predicted.count('class="seg"') == 3 and annotated.count('class="seg"') == 2
    assert 'data-start="1.200"' in predicted and ">nodding 0.91<" in predicted and ">(nobody)<" in predicted
    # one colour per label on both tracks
    colour = predicted.split('data-label="shaking head"')[1].split("background:")[1][:7]
    assert annotated.split('data-label="shaking head"')[1].split("background:")[1][:7] == colour
    summary = text.split('id="summary"')[1]
    assert "annotated" in summary and summary.count("<tr>") == 4  # header + 3 labels
    assert 'id="track-annotated"' not in render_review("talk", video, page, TIMELINE, 50 / 30)


class Chromium:
    """A headless Chromium spoken to over the DevTools protocol on a pipe."""

    def __init__(self, exe: str, profile: Path):
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()
        keep = [fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)]

        def as_fds_3_and_4():
            os.dup2(keep[0], 3)
            os.dup2(keep[1], 4)

        self.process = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--mute-audio",
             f"--user-data-dir={profile}", "--window-size=1200,900", "--autoplay-policy=no-user-gesture-required",
             "about:blank"], pass_fds=(3, 4), preexec_fn=as_fds_3_and_4, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        for fd in (to_browser, from_browser, *keep):
            os.close(fd)
        self._buffer, self._next = b"", 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, timeout: float = 20, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session or getattr(self, "session", None):
            message["sessionId"] = session or self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    assert "error" not in reply, reply
                    return reply["result"]
            ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"Chromium did not answer {method} in {timeout} s"
            chunk = os.read(self._replies, 1 << 16)
            assert chunk, "Chromium closed the pipe"
            self._buffer += chunk

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"{expression} stayed false for {timeout} s")

    def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        for fd in (self._commands, self._replies):
            os.close(fd)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@requires_shared
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y chromium)")
def test_a_click_on_a_segment_seeks_the_video_there(tmp_path):
    video = shortest_clip()  # B1 nodding: 50 frames at 30 fps, H.264
    page = write_review("B1", video, tmp_path / "out" / "review.html", TIMELINE, 50 / 30, TRUTH)
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=page.as_uri())
        # the real video loaded through its relative path: its duration is the clip's
        duration = browser.wait_for("document.getElementById('video').readyState >= 1 && "
                                    "document.getElementById('video').duration")
        assert duration == pytest.approx(50 / 30, abs=0.05)
        box = json.loads(browser.evaluate(
            "JSON.stringify(document.querySelector('#track-predicted .seg[data-label=\"shaking head\"]')"
            ".getBoundingClientRect())"))
        assert box["width"] > 10
        assert browser.evaluate("document.getElementById('video').currentTime") == 0
        browser.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        seeked = browser.wait_for("(() => { const v = document.getElementById('video'); "
                                  "return !v.seeking && v.currentTime > 0 && v.currentTime; })()")
        assert seeked == pytest.approx(1.2, abs=0.05)
        current = browser.evaluate("Array.from(document.querySelectorAll('.seg.current'))"
                                   ".map(s => s.dataset.track + ':' + s.dataset.label)")
        assert current == ["predicted:shaking head", "annotated:shaking head"]
    finally:
        browser.close()
