"""The ImageNet weight files a preset expects, and (on a machine with internet) fetching them.

    python -m pipeline.weights --configfile configs/voc12.yaml             # list what is needed
    python -m pipeline.weights --configfile configs/voc12.yaml --download  # save the missing files

Every `*.pretrained` key that names a file is read from it through timm's own loader
(`pretrained_cfg_overlay=dict(file=...)`), so the file holds a plain timm state dict. Its stem is
the timm model and pretrained tag (`weights/resnet50.a1_in1k.safetensors` -> `resnet50.a1_in1k`);
`--download` creates that model with timm's pretrained weights and saves its state dict there.
Copy the folder to machines without internet.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from pipeline.cli import setup_logging
from pipeline.errors import PipelineError, cli_entry

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("cam", "seco", "deeplab", "irn", "mctformer")


def expected_weights(config: dict) -> list[tuple[str, str, Path]]:
    """(config key, timm model.tag, file) for every pretrained key that names a file."""
    out = []
    for section in SECTIONS:
        value = (config.get(section) or {}).get("pretrained")
        if not isinstance(value, str) or value in ("hub", "none", "", "pretrain"):  # pretrain: the pretrain stage's
            continue
        path = Path(value)
        name = path.name.removesuffix(".safetensors").removesuffix(".pth").removesuffix(".bin")
        out.append((f"{section}.pretrained", name, path))
    return out


def _load_config(configfile: str | None) -> dict:
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    if configfile:
        try:
            update_config(config, yaml.safe_load(Path(configfile).read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise PipelineError(f"{configfile}: cannot read the preset ({exc})") from exc
    return config


def download(name: str, path: Path) -> None:
    from safetensors.torch import save_file

    from pipeline._compat import import_timm

    timm = import_timm()
    model = timm.create_model(name, pretrained=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", default=None, help="the preset (over config.yaml), e.g. configs/voc12.yaml")
    p.add_argument("--download", action="store_true", help="save the missing files (needs internet)")
    args = p.parse_args(argv)
    log = setup_logging()
    wanted = expected_weights(_load_config(args.configfile))
    if not wanted:
        print("this config reads no weight files (every pretrained key is null or hub)")
    for key, name, path in wanted:
        state = "present" if path.is_file() else "missing"
        print(f"{key}: timm model {name} -> {path} ({state})")
        if args.download and not path.is_file():
            log.info("downloading %s into %s", name, path)
            download(name, path)


if __name__ == "__main__":
    main()
