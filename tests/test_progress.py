"""Image loops report count, rate and ETA in plain log lines."""

from __future__ import annotations

import logging

from pipeline.io.progress import eta_text, progress


def test_progress_logs_rate_and_eta(monkeypatch, caplog):
    monkeypatch.setenv("WSSS_PROGRESS_SECONDS", "0")
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        assert list(progress(["a", "b", "c"], "make_cam rank 0")) == ["a", "b", "c"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[0].startswith("make_cam rank 0 1/3 images,")
    assert all("images/s, eta" in line for line in lines) and lines[-1].endswith("eta 0:00:00")


def test_progress_is_quiet_between_intervals(monkeypatch, caplog):
    monkeypatch.setenv("WSSS_PROGRESS_SECONDS", "3600")
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        list(progress(range(50), "crf masks/baseline shard 1-of-2", total=50))
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "crf masks/baseline shard 1-of-2 1/50 images", "crf masks/baseline shard 1-of-2 50/50 images"]


def test_eta_text():
    assert eta_text(10, 100, 2.0) == "0:00:45" and eta_text(0, 5, 0.0) == "?" and eta_text(5, 5, 1.0) == "0:00:00"
