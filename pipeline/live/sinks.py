"""Where `watch` sends its messages: JSON Lines (stdout or a file), MQTT, a webhook.

Every message is one JSON object. A sink that is down never stops scoring: MQTT
queues a bounded number of messages while the broker is away (paho-mqtt), the
webhook posts from a helper thread with bounded retries and a bounded queue,
and both count what they had to drop.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from cuboid_ad.core.errors import InputError

log = logging.getLogger(__name__)


class JsonLines:
    """One flushed line per message, on stdout or appended to a file (opened at the first message)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.fh: TextIO | None = None if self.path else sys.stdout

    def send(self, msg: dict[str, Any]) -> None:
        if self.fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(self.path, "a", encoding="utf-8")
        self.fh.write(json.dumps(msg, sort_keys=False) + "\n")
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None and self.fh is not sys.stdout:
            self.fh.close()


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT`` or ``HOST`` -> (host, port); InputError for anything else."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default_port))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--mqtt {text}: expected HOST:PORT, e.g. localhost:1883")
    return host, int(port)


class Mqtt:
    """Publishes events to ``<prefix>/events``, a retained ``<prefix>/<camera>/status``, and
    ``<prefix>/available`` (``online``, or ``offline`` by the broker's last will)."""

    def __init__(self, address: str, prefix: str, camera: str):
        import paho.mqtt.client as mqtt

        host, port = parse_host_port(address, 1883)
        self.prefix, self.camera = prefix, camera
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cuboid-ad-{camera}")
        self.client.max_queued_messages_set(1000)  # while the broker is away; older ones are dropped
        self.client.will_set(f"{prefix}/available", "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.reconnect_delay_set(1, 30)
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.publish(f"{self.prefix}/available", "online", qos=1, retain=True)

    def send(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "status":
            self.client.publish(f"{self.prefix}/{self.camera}/status", msg["status"], qos=1, retain=True)
        else:
            self.client.publish(f"{self.prefix}/events", json.dumps(msg), qos=1)

    def close(self) -> None:
        self.client.publish(f"{self.prefix}/available", "offline", qos=1, retain=True).wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()


class Webhook:
    """POSTs each message as JSON to ``url`` from a helper thread; ``retries`` more tries, 1 s apart
    and doubling, then the message is dropped. At most ``queue_size`` wait; more are dropped."""

    def __init__(self, url: str, retries: int, queue_size: int = 100, timeout: float = 5.0):
        if not url.startswith(("http://", "https://")):
            raise InputError(f"--webhook {url}: expected an http:// or https:// URL")
        self.url, self.retries, self.timeout = url, retries, timeout
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self.thread.start()

    def send(self, msg: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(json.dumps(msg).encode())
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            body = self.queue.get()
            if body is None:
                return
            if self.stopping.is_set():
                self.dropped += 1
                continue
            delay = 1.0
            for attempt in range(self.retries + 1):
                try:
                    req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"}, method="POST")
                    with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                        resp.read()
                    break
                except (urllib.error.URLError, OSError) as exc:
                    if attempt == self.retries or self.stopping.wait(delay):
                        self.dropped += 1
                        log.warning("webhook %s: message dropped (%s)", self.url, exc)
                        break
                    delay *= 2

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (within ``timeout``), then stop: what is still queued is dropped, and all the
        drops are counted in one warning."""
        deadline = time.monotonic() + timeout
        self._put_end(deadline)
        self.thread.join(max(0.0, deadline - time.monotonic()))
        self.stopping.set()  # the rest is counted as dropped, not sent; the message in flight ends within its timeout
        self._put_end(time.monotonic() + self.timeout + 1)
        self.thread.join(self.timeout + 1)
        if self.dropped:
            log.warning("webhook %s: %d messages dropped in all", self.url, self.dropped)

    def _put_end(self, deadline: float) -> None:
        while self.thread.is_alive():
            try:
                self.queue.put(None, timeout=0.05)
                return
            except queue.Full:
                if time.monotonic() > deadline:
                    return


class Sinks:
    """All the sinks of one `watch`; a sink that raises is logged, never stops the others."""

    def __init__(self, sinks: list):
        self.sinks = sinks

    def send(self, msg: dict[str, Any]) -> None:
        for s in self.sinks:
            try:
                s.send(msg)
            except Exception as exc:  # noqa: BLE001 - a sink must not stop scoring
                log.warning("%s: could not send a message (%s)", type(s).__name__, exc)

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: could not close (%s)", type(s).__name__, exc)
