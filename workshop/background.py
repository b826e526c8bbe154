"""Requests sent steadily while something changes (a rollout, a model swap), and what each one got.

"No request was dropped" is a claim a notebook should show, not make. :class:`BackgroundTraffic` sends one
request at a time from a thread for as long as its ``with`` block runs, and records for each the time, the
HTTP status (0: no answer at all, e.g. the connection was refused) and who answered it (the model version or
the chat model named in the answer). :func:`per_second` counts them per second for a plot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd

from workshop.waiting import WaitTimeout, wait_for

NO_ANSWER = 0  # the status recorded for a request that got no HTTP answer

Send = Callable[[httpx.Client], tuple[int, str]]


@dataclass
class BackgroundTraffic:
    """Calls ``send`` back to back (``pause_s`` between calls) in a thread while the ``with`` block runs."""

    url: str | Callable[[], str]  # a callable is read before each request (a local replica's URL moves)
    send: Send
    pause_s: float = 0.05
    timeout_s: float = 30.0
    records: list[tuple[float, int, str]] = field(default_factory=list, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> BackgroundTraffic:
        self._thread = threading.Thread(target=self._run, name="background-traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)

    def _run(self) -> None:
        # A new connection for every request: a Service or a port-forward then picks a pod per request, as a
        # browser's fresh connection would, and a replica that went away cannot hold a stale keep-alive.
        while not self._stop.is_set():
            started = time.time()
            url = self.url() if callable(self.url) else self.url
            with httpx.Client(base_url=url.rstrip("/"), timeout=self.timeout_s) as http:
                try:
                    status, answered_by = self.send(http)
                except httpx.HTTPError as error:
                    status, answered_by = NO_ANSWER, type(error).__name__
            self.records.append((started, status, answered_by))
            self._stop.wait(self.pause_s)

    def wait_until(self, condition: Callable[[list[tuple[float, int, str]]], bool], timeout: float) -> None:
        """Block until ``condition(records)`` holds (e.g. the new model has answered once); TimeoutError if not."""
        try:
            wait_for(lambda: condition(list(self.records)), timeout, "background traffic's condition", interval=0.05,
                     retry_on=())
        except WaitTimeout:
            raise TimeoutError(
                f"background traffic: condition not met within {timeout:.0f} s; {self.summary()}") from None

    def answered_by(self, who: str) -> Callable[[list[tuple[float, int, str]]], bool]:
        """A condition for :meth:`wait_until`: ``who`` has answered at least one request."""
        return lambda records: any(answered == who for _, _, answered in records)

    @property
    def frame(self) -> pd.DataFrame:
        """One row per request: ``time`` (UTC), ``status``, ``answered_by``."""
        frame = pd.DataFrame(self.records, columns=["time", "status", "answered_by"])
        frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
        return frame

    @property
    def failed(self) -> int:
        """Requests answered with a 5xx or not at all: the ones a user would have seen fail."""
        return sum(1 for _, status, _ in self.records if status == NO_ANSWER or status >= 500)

    def summary(self) -> dict[str, Any]:
        statuses = pd.Series([status for _, status, _ in self.records], dtype="int64").value_counts().sort_index()
        return {"requests": len(self.records), "failed": self.failed,
                "statuses": {("no answer" if s == NO_ANSWER else int(s)): int(n) for s, n in statuses.items()}}


def per_second(traffic: BackgroundTraffic, column: str) -> pd.DataFrame:
    """Requests per second (rows) by ``column`` (``status`` or ``answered_by``), zeros where none."""
    frame = traffic.frame
    if frame.empty:
        return pd.DataFrame()
    frame["second"] = frame["time"].dt.floor("s")
    counts = frame.groupby(["second", column]).size().unstack(fill_value=0)
    full = pd.date_range(counts.index.min(), counts.index.max(), freq="s")
    return counts.reindex(full, fill_value=0)


def wine_prediction(wine: dict[str, Any]) -> Send:
    """``POST /predict`` with ``wine``; answered by the model version in the answer."""
    def send(http: httpx.Client) -> tuple[int, str]:
        response = http.post("/predict", json=wine)
        return response.status_code, response.json().get("model_version", "-") if response.is_success else "-"
    return send


def chat_completion(messages: list[dict[str, str]], max_new_tokens: int = 4) -> Send:
    """``POST /completion`` with ``messages``; answered by the model named in the answer."""
    def send(http: httpx.Client) -> tuple[int, str]:
        response = http.post("/completion", json={"messages": messages, "max_new_tokens": max_new_tokens})
        return response.status_code, response.json().get("model", "-") if response.is_success else "-"
    return send
