"""Stage entry points: one module per Snakemake rule (`python -m pipeline.stages.<stage>`), each a
thin command line (parse args, call a method package, write the artifact). Stages talk only
through files; no stage imports another (tests/test_layout.py checks it). Which rule runs which
stage with which config sections: `pipeline.rules`."""
