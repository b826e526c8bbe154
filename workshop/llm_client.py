"""Talk to the LLM service as any client would: over HTTP, with plain JSON and server-sent events.

The notebooks, the swap benchmark and the tests drive the service through this
class; it never imports the service's code. Refusals raise :class:`~workshop.exceptions.ServiceError` (also
importable here as :data:`LLMServiceError`, the name notebook 07 catches) and ``/metrics`` is parsed by
:mod:`workshop.service_client`, as for the wine service.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from workshop.exceptions import ServiceError, StateTimeoutError
from workshop.service_client import http_client, metrics_by_series, read_json
from workshop.waiting import wait_for

__all__ = ["STATES", "LLMClient", "LLMServiceError", "StateTimeoutError"]

STATES = ("NOT_DEPLOYED", "LOADING", "RUNNING", "FAILED")
BAD_GATEWAY = 502  # what the kubernetes target's port-forward answers when no pod is ready behind the Service
LLMServiceError = ServiceError  # the LLM service refused a request: one error type for both services


@dataclass
class LLMClient:
    """One client per service; its connections are kept and reused (safe to share between threads)."""

    url: str
    timeout: float = 60.0
    _http: httpx.Client | None = field(default=None, init=False, repr=False)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = http_client(self.url, self.timeout)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def complete(self, messages: list[dict[str, str]] | str, **options: Any) -> dict[str, Any]:
        """One completion; ``messages`` may be a plain string (one user message).
        ``options``: ``max_new_tokens``, ``temperature``, ``top_p``, ``seed``."""
        return read_json(self._request("POST", "/completion", json=self._body(messages, options)))

    def stream(self, messages: list[dict[str, str]] | str, **options: Any) -> Iterator[dict[str, Any]]:
        """Yield the server-sent events of a streamed completion: ``{"event": "token", "text": ...}``
        for each piece, then ``{"event": "done", **answer}`` (or ``{"event": "error", **error}``)."""
        body = {**self._body(messages, options), "stream": True}
        with self.http.stream("POST", "/completion", json=body) as response:
            if response.is_error:
                response.read()
                read_json(response)
            event, data = "message", []
            for line in response.iter_lines():
                if line.startswith(":"):
                    continue  # a keep-alive comment
                if not line:
                    if data:
                        yield {"event": event, **json.loads("\n".join(data))}
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
            if data:
                yield {"event": event, **json.loads("\n".join(data))}

    @staticmethod
    def _body(messages: list[dict[str, str]] | str, options: dict[str, Any]) -> dict[str, Any]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return {"messages": messages, **options}

    def status(self) -> dict[str, Any]:
        return read_json(self._request("GET", "/status"))

    def model(self) -> dict[str, Any]:
        return read_json(self._request("GET", "/model"))

    def swap(self, model_id: str, revision: str | None = None) -> dict[str, Any]:
        """Ask for a swap; returns the status at once (LOADING). Raises :class:`LLMServiceError` on 409/422."""
        body: dict[str, Any] = {"model_id": model_id}
        if revision is not None:
            body["revision"] = revision
        return read_json(self._request("POST", "/model", json=body))

    def wait_for_state(self, states: str | Iterable[str], timeout: float = 120.0, interval: float = 0.1
                       ) -> dict[str, Any]:
        """Poll ``/status`` until its state is one of ``states``; returns that status."""
        wanted = (states,) if isinstance(states, str) else tuple(states)
        unknown = set(wanted) - set(STATES)
        if unknown:
            raise ValueError(f"unknown state(s) {sorted(unknown)}; the states are {', '.join(STATES)}")
        last: dict[str, Any] | None = None

        def in_wanted_state() -> dict[str, Any] | None:
            nonlocal last
            last = None  # not answering (not up yet) until it does; any other error ends the wait
            try:
                last = self.status()
            except ServiceError as error:
                if error.status_code == BAD_GATEWAY:  # a port-forward that reached no pod (restarting): not yet
                    return None
                raise
            return last if last["state"] in wanted else None

        try:
            return wait_for(in_wanted_state, timeout, f"state {' or '.join(wanted)}", interval=interval,
                            retry_on=(httpx.TransportError,))
        except TimeoutError as error:
            raise StateTimeoutError(wanted, timeout, last) from error

    def swap_and_wait(self, model_id: str, revision: str | None = None, timeout: float = 600.0) -> dict[str, Any]:
        """Swap, then wait until the load ends (RUNNING or FAILED); returns the final status."""
        self.swap(model_id, revision)
        return self.wait_for_state(("RUNNING", "FAILED"), timeout)

    def ready(self) -> bool:
        return self._request("GET", "/ready").status_code == 200

    def health(self) -> bool:
        return self._request("GET", "/health").status_code == 200

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` as ``{'name{label="v",...}': value}`` (labels sorted; no ``_created``)."""
        return metrics_by_series(read_json(self._request("GET", "/metrics")))
