"""The conda env file every rule names is self-contained and pins what the virtualenv pins."""

from __future__ import annotations

import yaml

from tests.conftest import REPO


def _requirements() -> list[str]:
    lines = (REPO / "envs/requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_conda_env_pins_equal_the_requirements():
    env = yaml.safe_load((REPO / "envs/wsss.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip == _requirements()
    # Snakemake copies the file to .snakemake/conda/<hash>.yaml: nothing may point at other files.
    assert not any(str(x).startswith(("-r", "-e", "-c", ".", "/")) for x in pip)
