"""The node's durable state under `OUT/node/` (`evidence.layout.node`): what was received, what was decided, what is still to
be delivered. Every file is written to a temporary name, fsynced, renamed, and the folder fsynced,
so that a kill -9 (or a power loss) at any point leaves either the old state or the new one.

    queue/<sop>.dcm, queue/<sop>.json   a received instance (Part 10) and its receipt time; written
                                        before the C-STORE response, removed once the study is done
    done/<sop>.json                     the notification of a processed instance: the journal that
                                        makes processing idempotent by SOPInstanceUID
    outbox/<sop>/*.dcm                  result objects still to be sent to the PACS
    notifications.jsonl                 one line per instance, appended (and fsynced) from `done/`

Recovery (`recover`): a queued instance with a `done/` entry is removed (it was processed); a
`done/` entry without its line in `notifications.jsonl` gets its line. So a restart neither loses
nor repeats a study.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def valid_uid(uid: object) -> bool:
    return isinstance(uid, str) and len(uid) <= 64 and bool(UID.match(uid))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically and durably (file and folder fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


class NodeState:
    """The node's folders and the operations on them (thread-safe where threads share them)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.queue, self.done, self.outbox = self.root / "queue", self.root / "done", self.root / "outbox"
        self.log = self.root / "notifications.jsonl"
        for folder in (self.queue, self.done, self.outbox):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.wake = threading.Event()

    # receiving
    def is_done(self, sop: str) -> bool:
        return (self.done / f"{sop}.json").is_file()

    def enqueue(self, sop: str, data: bytes, meta: dict) -> Path:
        """Store a received instance durably (metadata first, the instance last: an instance file
        present means it is complete)."""
        durable_write(self.queue / f"{sop}.json", json.dumps(meta).encode())
        path = durable_write(self.queue / f"{sop}.dcm", data)
        self.wake.set()
        return path

    def pending(self, limit: int) -> list[tuple[str, Path, dict]]:
        """Up to `limit` queued instances, oldest first: (sop, file, metadata)."""
        items = []
        for path in sorted(self.queue.glob("*.dcm"), key=lambda p: p.stat().st_mtime_ns)[:limit]:
            sop = path.stem
            try:
                meta = json.loads((self.queue / f"{sop}.json").read_text())
            except (OSError, ValueError):
                meta = {"received_utc": time.time()}
            items.append((sop, path, meta))
        return items

    # deciding
    def complete(self, sop: str, notification: dict, results: dict[str, bytes]) -> None:
        """Journal the decision: result objects into the outbox, then `done/<sop>.json`, then the
        notification line, then the queued instance removed. Each step is durable."""
        for name, data in results.items():
            durable_write(self.outbox / sop / name, data)
        durable_write(self.done / f"{sop}.json", json.dumps(notification).encode())
        self.append_notification(notification)
        self.dequeue(sop)

    def dequeue(self, sop: str) -> None:
        for suffix in (".dcm", ".json"):
            (self.queue / f"{sop}{suffix}").unlink(missing_ok=True)
        fsync_dir(self.queue)

    def notified(self) -> set[str]:
        """SOPInstanceUIDs that have a line in notifications.jsonl (a torn last line is ignored)."""
        if not self.log.is_file():
            return set()
        seen = set()
        for line in self.log.read_text(encoding="utf-8").splitlines():
            try:
                seen.add(json.loads(line)["sop_instance_uid"])
            except (ValueError, KeyError, TypeError):
                continue
        return seen

    def append_notification(self, notification: dict) -> None:
        line = json.dumps(notification, sort_keys=True) + "\n"
        with self._lock:
            with open(self.log, "ab") as f:
                if f.tell() and not self._ends_with_newline():
                    f.write(b"\n")  # a line torn by a kill is closed, not glued to the next
                f.write(line.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.log, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def recover(self) -> dict:
        """Finish what a stopped node left half done; returns what was found."""
        notified = self.notified()
        repaired = 0
        for entry in sorted(self.done.glob("*.json")):
            if entry.stem not in notified:
                self.append_notification(json.loads(entry.read_text()))
                repaired += 1
        cleared = 0
        for path in list(self.queue.glob("*.dcm")):
            if self.is_done(path.stem):
                self.dequeue(path.stem)
                cleared += 1
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        return {"notifications_repaired": repaired, "queued_already_done": cleared,
                "queued": len(list(self.queue.glob("*.dcm"))), "outbox": len(self.undelivered())}

    # delivering
    def undelivered(self) -> list[Path]:
        return sorted(p for p in self.outbox.iterdir() if p.is_dir() and any(p.glob("*.dcm")))

    def delivered(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
