"""Every Snakemake command the README shows builds its DAG (as a dry run, in a scratch directory).

The other README commands run elsewhere: the setup/test lines are CI itself; the `--forcerun`
commands and `snakemake --report report.html` on a finished run; the tiny DAG, the
fault injection and the benchmark renderer in tests/test_workflow.py; the SLURM profile through a
real SLURM in tests/test_slurm.py (which runs `python -m pipeline.bench.slurm`); `pipeline.weights` in tests/test_weights.py; the GPU
benchmark's CPU path in tests/test_bench_gpu.py. (tests/test_workflow.py::test_readme_rerun_commands runs
exactly the two `--forcerun` commands above.)
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from tests.conftest import REPO, tool_env


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("snakemake")]


COMMANDS = _readme_commands()


def test_the_readme_shows_snakemake_commands():
    assert len(COMMANDS) >= 8 and "snakemake --profile profiles/slurm" in COMMANDS
    forced = {c for c in COMMANDS if "--forcerun" in c}
    assert forced == {"snakemake results/cam/baseline/cams.h5 --forcerun make_cam", "snakemake --forcerun make_cam"}


def test_the_readme_shows_the_report_command():
    assert "snakemake --report report.html" in COMMANDS


@pytest.mark.parametrize("command", [c for c in COMMANDS
                                     if "profiles/slurm" not in c and "--forcerun" not in c and "--report" not in c])
def test_readme_snakemake_command_builds_its_dag(command, tmp_path):
    args = shlex.split(command)[1:]
    if "--directory" in args:  # a documented scratch folder: use this test's instead
        i = args.index("--directory")
        del args[i:i + 2]
    p = subprocess.run(["snakemake", *args, "-n", "--directory", str(tmp_path)], capture_output=True, text=True,
                       cwd=REPO, env=tool_env())
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "This was a dry-run" in p.stdout
