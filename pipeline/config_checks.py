"""Config rules the JSON schema cannot express: order between keys, references between sections,
and the requirements one method puts on another. Run when the DAG is built (common.smk), so a
bad config fails before any job starts, naming the key. Types, enums and ranges are the schema's
(workflow/schemas/config.schema.yaml); values and defaults are config.yaml's.
"""

from __future__ import annotations

from pipeline.config_lookup import lookup
from pipeline.errors import PipelineError

CAM_METHODS = ("baseline", "csd")
MCT_METHODS = ("mctformer", "mctformer_csd")  # MCTformer-V2's maps (make_cam_mctformer)
# The random walk's recipe follows the CAM model a method's seeds come from: IRN's walk for the ResNet
# CAM classifier's methods, PSA's as MCTformer runs it (irn.psa) for MCTformer's. A further method on
# one of these models joins the random-walk path (common.smk RW_METHODS) by its entry in CAM_FAMILY.
CAM_FAMILY = {"baseline": "resnet_cam", "csd": "resnet_cam", "mctformer": "mctformer", "mctformer_csd": "mctformer"}
WALK_RECIPE = {"resnet_cam": "irn", "mctformer": "psa"}


def _order(cfg: dict, low_key: str, high_key: str) -> None:
    low, high = lookup(cfg, low_key), lookup(cfg, high_key)
    if low > high:
        raise PipelineError(f"config key {low_key}: {low} exceeds {high_key} ({high})")


def check_config(cfg: dict) -> None:
    """Raise PipelineError naming the first offending key."""
    methods = cfg["masks"]["methods"]
    presets = cfg["crf"]["presets"]
    if not methods:
        raise PipelineError("config key masks.methods: empty (at least one method is needed)")
    unknown = [m for m in methods if m not in (*CAM_METHODS, *MCT_METHODS, "seco")]
    if unknown:
        raise PipelineError(f"config key masks.methods.{unknown[0]}: unknown method "
                            "(known: baseline, csd, mctformer, mctformer_csd, seco)")
    if "baseline" not in methods:
        raise PipelineError("config key masks.methods.baseline: missing (CSD's round 1 and the offline tags need it)")
    for m, recipe in methods.items():
        key = f"masks.methods.{m}"
        if recipe["crf"] not in presets:
            raise PipelineError(f"config key {key}.crf: {recipe['crf']!r} is not a preset in crf.presets "
                                f"({sorted(presets)})")
        if recipe["labels"] == "dual":
            for k in ("fg_threshold", "bg_threshold"):
                if k not in recipe:
                    raise PipelineError(f"config key {key}.{k}: missing (labels: dual)")
            _order(cfg, f"{key}.bg_threshold", f"{key}.fg_threshold")
        if recipe["labels"] == "single" and "threshold" not in recipe:
            raise PipelineError(f"config key {key}.threshold: missing (labels: single)")
        if m in (*CAM_METHODS, *MCT_METHODS) and recipe["source"] != "cam":
            raise PipelineError(f"config key {key}.source: {m} has CAM seeds only (source: cam)")
        if recipe.get("refine", "crf") == "random_walk" and m not in CAM_FAMILY:
            raise PipelineError(f"config key {key}.refine: random_walk needs CAM seeds (IRN's or PSA's random walk), "
                                f"{m} has none")
        if m not in cfg["eval_cam"]["bg_threshold"]:
            raise PipelineError(f"config key eval_cam.bg_threshold.{m}: missing (every method's seeds are evaluated)")
    if cfg["crf"]["predictions"] not in presets:
        raise PipelineError(f"config key crf.predictions: {cfg['crf']['predictions']!r} is not a preset in "
                            f"crf.presets ({sorted(presets)})")
    if not cfg["eval_cam"]["sweep"]:
        raise PipelineError("config key eval_cam.sweep: empty (list at least one threshold)")
    if "csd" in methods and cfg["cam"]["crop_size"] % cfg["cam"]["output_stride"]:
        raise PipelineError(f"config key cam.crop_size: {cfg['cam']['crop_size']} is not a multiple of "
                            f"cam.output_stride {cfg['cam']['output_stride']} (CSD's losses work on whole CAM cells)")
    if "mctformer_csd" in methods:
        _check_mctformer_csd(cfg)
    seco = cfg["seco"]
    _order(cfg, "seco.low", "seco.high")
    if seco["local_crop_size"] >= seco["crop_size"]:
        raise PipelineError("config key seco.local_crop_size: must be smaller than seco.crop_size")
    if any(m in CAM_FAMILY for m in methods):
        _check_irn(cfg)
    if any(WALK_RECIPE[CAM_FAMILY[m]] == "psa" for m in methods if m in CAM_FAMILY):
        _check_psa_walk(cfg)
    _check_pretrain(cfg)


def _check_mctformer_csd(cfg: dict) -> None:
    """CSD on MCTformer: round 1 is the `mctformer` method, and both need their config sections."""
    methods = cfg["masks"]["methods"]
    if "mctformer" not in methods:
        raise PipelineError("config key masks.methods.mctformer: missing (mctformer_csd's round-1 masks are "
                            "MCTformer's own; list both)")
    for section in ("mctformer", "mctformer_csd"):
        if section not in cfg:
            raise PipelineError(f"config key {section}: missing (masks.methods lists mctformer_csd)")
    if cfg["mctformer_csd"]["source_masks"] == "cam_seeds" and methods["mctformer"]["labels"] != "dual":
        raise PipelineError("config key mctformer_csd.source_masks: cam_seeds cuts sources with "
                            "masks.methods.mctformer's dual thresholds (labels: dual)")


def _check_pretrain(cfg: dict) -> None:
    """`pretrained: pretrain` only where the rules depend on the pretrain job, and a corpus that can be drawn."""
    from pipeline.pretrain.cache import PRETRAIN, SECTIONS

    for section, value in cfg.items():
        if isinstance(value, dict) and value.get("pretrained") == PRETRAIN and section not in SECTIONS:
            raise PipelineError(f"config key {section}.pretrained: {PRETRAIN!r} is supported for {', '.join(SECTIONS)} "
                                "(their training rules depend on the pretrain job); give a weight file")
    pre = cfg.get("pretrain")
    if not pre:
        if any((cfg.get(s) or {}).get("pretrained") == PRETRAIN for s in SECTIONS):
            raise PipelineError("config key pretrain: missing (a section says pretrained: pretrain)")
        return
    corpus = pre["corpus"]
    _order(cfg, "pretrain.corpus.min_size", "pretrain.corpus.max_size")
    if pre["crop_size"] > corpus.get("max_size", 64):
        raise PipelineError(f"config key pretrain.crop_size: {pre['crop_size']} exceeds pretrain.corpus.max_size "
                            f"({corpus.get('max_size', 64)})")
    lo, hi = corpus.get("object_scale", (0.45, 0.75))
    if lo > hi or hi > 1:
        raise PipelineError(f"config key pretrain.corpus.object_scale: [{lo}, {hi}] must be increasing, at most 1")


def _check_irn(cfg: dict) -> None:
    """IRN's crops must tile into whole backbone cells, and the pair radius must fit the crop's grid."""
    irn = cfg["irn"]
    stride = cfg["cam"]["output_stride"] if irn["backbone_from"] == "cam_model" else 16
    if irn["crop_size"] % max(stride, 4):
        raise PipelineError(f"config key irn.crop_size: {irn['crop_size']} is not a multiple of the backbone's "
                            f"output stride {stride}")
    cells = irn["crop_size"] // 4
    if cells <= 2 * (irn["path_radius"] - 1):
        raise PipelineError(f"config key irn.path_radius: {irn['path_radius']} leaves no pair on the "
                            f"{cells}x{cells} stride-4 grid of irn.crop_size {irn['crop_size']}")
    if cfg["cam"]["cam_stride"] != 4:
        raise PipelineError(f"config key cam.cam_stride: {cfg['cam']['cam_stride']}; IRN's random walk runs on the "
                            "stride-4 CAM grid of its boundary map (4)")


def _check_psa_walk(cfg: dict) -> None:
    """PSA's walk grid is IRN's stride-4 boundary grid pooled by a whole factor."""
    walk = cfg["irn"]["psa"]
    if walk["stride"] % 4:
        raise PipelineError(f"config key irn.psa.stride: {walk['stride']} is not a multiple of 4 (the walk grid pools "
                            "IRN's stride-4 boundary map by a whole factor)")
