"""GPU job runtime shared by every training and inference stage. Import from the submodules:

    lease        GpuLease: distinct physical GPUs per concurrent Snakemake job (flock based)
    device       select_device, setup_precision, autocast (runtime.device, runtime.amp); peak memory
    distributed  launch + DDP helpers (batch size is per process; lr is never rescaled)
    loader       ResumableLoader: endless, seeded, rank-sharded, resumable batches
    checkpoint   save_checkpoint / load_latest (resume) and save_final / load_final (outputs)
    trainer      run_loop: resume, checkpoints, progress, metrics CSV, in one place
    train        train_main: the one training skeleton (device, precision, data, seed, DDP,
                 threads per rank, loop, final save) that every training stage runs
    rng          seed_everything and RNG state capture/restore

`lease` imports no torch: a stage takes its GpuLease before CUDA is touched.
"""
