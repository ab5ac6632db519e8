# WSSS pipeline: CAM seeds -> patch tags -> SeCo / CSD training -> pseudo masks -> CRF -> DeepLab.
# Paths: results/<stage>/... (artifacts), logs/<rule>/... and benchmarks/<rule>/... per job.
# Run:    snakemake --cores 8 --resources gpu=4        (see README for presets and SLURM)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/cam.smk"
include: "workflow/rules/csd.smk"
include: "workflow/rules/seco.smk"
include: "workflow/rules/masks.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
