"""WSSS pipeline: SeCo and CSD as a Snakemake DAG. Each stage is `python -m pipeline.stages.<stage>`."""

__version__ = "0.1.0"
