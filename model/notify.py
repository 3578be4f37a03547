"""Notifications: one JSON object per received instance (the worklist's flag), appended to
`OUT/node/notifications.jsonl` by the node and, when a worklist URL is configured, POSTed to it.

Fields: study_uid, sop_instance_uid, status (flagged | not_flagged | rejected | error), probability
(null unless analyzed), reasons, received_utc and notified_utc (ISO 8601, UTC, microseconds),
seconds (notified - received), plus threshold and model_sha256 of the device that decided.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

STATUSES = ("flagged", "not_flagged", "rejected", "error")
POST_ATTEMPTS, POST_TIMEOUT_S = 3, 5.0
log = logging.getLogger("model.node")


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")


def notification(*, study_uid: str | None, sop_instance_uid: str, status: str, probability: float | None,
                 reasons: list[str], received: float, notified: float, threshold: float,
                 model_sha256: str) -> dict:
    if status not in STATUSES:
        raise ValueError(f"notification status {status!r} is not one of {', '.join(STATUSES)}")
    return {"study_uid": study_uid, "sop_instance_uid": sop_instance_uid, "status": status,
            "probability": probability, "reasons": list(reasons), "received_utc": utc(received),
            "notified_utc": utc(notified), "seconds": round(notified - received, 6),
            "threshold": threshold, "model_sha256": model_sha256}


def post(url: str, payload: dict, *, attempts: int = POST_ATTEMPTS, timeout: float = POST_TIMEOUT_S) -> bool:
    """POST the notification as JSON; a few tries with back-off. False (and a log line) when the
    worklist did not take it: the notification stays in notifications.jsonl either way."""
    body = json.dumps(payload, sort_keys=True).encode("utf-8")
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return True
                problem = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError, ValueError) as e:
            problem = f"{type(e).__name__}: {e}"
        time.sleep(0.5 * 2 ** attempt if attempt + 1 < attempts else 0)
    log.warning("worklist %s did not take the notification of %s: %s", url, payload.get("sop_instance_uid"), problem)
    return False
