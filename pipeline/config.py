"""Stage command lines: every stage takes its config slice as JSON (`--cfg`) plus file paths.

Snakemake passes only the config sections a stage reads, through `params:`, so editing an
unrelated config key does not rerun the stage (Snakemake's params trigger).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from pipeline.errors import PipelineError


def stage_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cfg", required=True, help="JSON object with the config sections this stage reads")
    return p


def parse_cfg(text: str) -> dict:
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"--cfg is not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise PipelineError("--cfg must be a JSON object")
    return cfg


def require(cfg: dict, dotted: str):
    """Fetch `a.b.c` from cfg, failing with the config key's name."""
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PipelineError(f"config key {dotted}: missing")
        node = node[part]
    return node


def setup_logging(argv: Sequence[str] | None = None) -> logging.Logger:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr, force=True)
    return logging.getLogger("pipeline")
