"""Dotted-key access to the nested config. Standard library only, and its own module so that the
rule table (`pipeline.rules`) stays out of every stage's code hash: stages import this, not that."""

from __future__ import annotations


def lookup(config: dict, dotted: str, default=None):
    """`config["a"]["b"]` for "a.b", or `default` where a key on the way is missing."""
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node
