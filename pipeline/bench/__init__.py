"""Benchmark commands: the CPU DAG benchmark (`run`) and the GPU micro-benchmark (`gpu`)."""
