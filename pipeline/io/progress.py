"""Progress of a stage's loop over images: count, rate and ETA as plain log lines.

Long stages (make_cam, infer_seco, infer_deeplab, the CRF, exports and evaluations) would
otherwise be silent for many minutes on VOC or COCO. A line goes to the log at the first image,
then every `WSSS_PROGRESS_SECONDS` (default 30) seconds, and at the end; plain lines, because a
redrawn bar turns a log file into one huge line.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("pipeline.progress")
INTERVAL_ENV = "WSSS_PROGRESS_SECONDS"


def _interval() -> float:
    try:
        return float(os.environ.get(INTERVAL_ENV, "30"))
    except ValueError:
        return 30.0


def eta_text(done: int, total: int, rate: float) -> str:
    if done >= total:
        return "0:00:00"
    if rate <= 0 or not math.isfinite(rate):
        return "?"
    return str(datetime.timedelta(seconds=int((total - done) / rate)))


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "images") -> Iterator[T]:
    """Yield `items`, logging `desc done/total unit, rate/s, eta` as it goes."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    every = _interval()
    t0 = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if done == 1 or done == total or now - last >= every:
            rate = done / max(now - t0, 1e-9)
            log.info("%s %d/%d %s, %.2f %s/s, eta %s", desc, done, total, unit, rate, unit, eta_text(done, total, rate))
            last = now
