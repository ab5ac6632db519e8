"""The rule table: `RULES` declares, once, which stage module each rule runs and which config sections it reads.
The rule passes exactly that slice as `--cfg` (so only those keys trigger a rerun) and the
benchmark builds the same `--cfg` from it. A section may be a dotted path ("masks.methods.baseline")
to pass one sub-tree, and "-a.b" drops that sub-tree again (keys only a later stage reads, so
that changing them does not retrain). Standard library only: the Snakefile imports this when the
DAG is built. No stage imports it (tests/test_layout.py), so editing the table changes no
stage's code hash; a changed slice reruns its rule through the `cfg` param.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from pipeline.config_lookup import lookup

_GPU = ("seed", "dataset", "runtime")


class Rule(NamedTuple):
    stage: str                    # module under pipeline.stages
    sections: tuple[str, ...]     # config sections (or dotted sub-trees) the stage reads


RULES: dict[str, Rule] = {
    "make_synthetic": Rule("make_synthetic", ("synthetic",)),
    "make_pretrain_corpus": Rule("make_pretrain_corpus", ("pretrain.corpus",)),
    # One job per backbone family: its --cfg is that job's spec (pipeline.pretrain.cache.stage_cfg).
    "pretrain": Rule("pretrain", ("runtime", "pretrain")),
    "index_dataset": Rule("index_dataset", ("dataset", "cam.batch_size", "seco.batch_size", "deeplab.batch_size")),
    "train_cam": Rule("train_cam", (*_GPU, "cam")),
    "make_cam": Rule("make_cam", (*_GPU, "cam")),
    "eval_cam": Rule("eval_cam", ("dataset", "eval", "eval_cam")),
    # seco.infer is infer_seco's alone: a cache-format change must not retag or retrain.
    "tag_patches": Rule("tag_patches", ("seed", "dataset", "seco", "-seco.infer")),
    "train_csd": Rule("train_csd", (*_GPU, "cam", "csd", "masks.methods.baseline")),
    "train_seco": Rule("train_seco", (*_GPU, "seco", "-seco.infer")),
    "infer_seco": Rule("infer_seco", (*_GPU, "seco")),
    "eval_seco": Rule("eval_seco", ("dataset", "eval")),
    "export_masks": Rule("export_masks", ("dataset", "masks")),
    "crf_masks": Rule("crf", ("dataset", "masks", "crf")),
    "gather_crf_masks": Rule("gather_shards", ()),
    "eval_masks": Rule("eval_masks", ("dataset", "eval")),
    "train_irn": Rule("train_irn", (*_GPU, "cam", "irn")),
    "make_sem_seg_labels": Rule("make_sem_seg_labels", (*_GPU, "irn")),
    "eval_rw_masks": Rule("eval_masks", ("dataset", "eval")),
    "train_mctformer": Rule("train_mctformer", (*_GPU, "mctformer")),
    "make_cam_mctformer": Rule("make_cam_mctformer", (*_GPU, "mctformer")),
    "train_mctformer_csd": Rule("train_mctformer_csd", (*_GPU, "mctformer", "csd", "mctformer_csd",
                                                         "masks.methods.mctformer")),
    "export_mask_pngs": Rule("export_mask_pngs", ()),
    "train_deeplab": Rule("train_deeplab", (*_GPU, "deeplab")),
    "infer_deeplab": Rule("infer_deeplab", (*_GPU, "deeplab", "report")),
    "crf_predictions": Rule("crf", ("dataset", "crf")),
    "gather_crf_predictions": Rule("gather_shards", ()),
    "eval_deeplab": Rule("eval_deeplab", ("dataset", "eval")),
    "summarize": Rule("summarize", ()),
    "report_qualitative": Rule("report_qualitative", ("seed", "dataset", "report")),
    "report_front": Rule("report_front", ("*",)),  # shows the resolved config
}


def config_slice(config: dict, sections: tuple[str, ...]) -> dict:
    """The part of `config` under `sections`; a dotted section keeps only that sub-tree, "-a.b"
    drops the sub-tree a.b from what the others kept, and "*" is the whole config."""
    if "*" in sections:
        return dict(config)
    out: dict = {}
    for section in (s for s in sections if not s.startswith("-")):
        *parents, leaf = section.split(".")
        dst = out
        for key in parents:
            dst = dst.setdefault(key, {})
        dst[leaf] = lookup(config, section)
    for section in (s[1:] for s in sections if s.startswith("-")):
        *parents, leaf = section.split(".")
        parent = lookup(out, ".".join(parents)) if parents else out
        if not isinstance(parent, dict) or leaf not in parent:
            continue
        # copy the path down to the dropped key: the kept sub-trees are the caller's own dicts
        dst = out
        for key in parents:
            dst[key] = dict(dst[key])
            dst = dst[key]
        del dst[leaf]
    return out


def stage_cfg(config: dict, rule: str) -> str:
    """The `--cfg` JSON the rule passes to its stage."""
    return json.dumps(config_slice(config, RULES[rule].sections), sort_keys=True)
