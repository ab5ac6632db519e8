"""Evaluation: confusion matrices, segmentation scores and their TSV/JSON outputs."""
