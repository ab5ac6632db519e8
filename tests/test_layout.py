"""The package layout's rules: thin stages that never import each other, one training skeleton."""

from __future__ import annotations

import ast

from pipeline.provenance import ROOT, direct_imports
from pipeline.rules import RULES

STAGES = ROOT / "stages"


def test_no_stage_imports_another_stage():
    for path in sorted(STAGES.glob("*.py")):
        if path.name == "__init__.py":
            continue
        stage_imports = {m for m in direct_imports(path) if m.startswith("pipeline.stages.")}
        assert not stage_imports, f"{path.name} imports {sorted(stage_imports)}"


def test_every_rule_names_an_existing_stage_module():
    for rule, entry in RULES.items():
        assert (STAGES / f"{entry.stage}.py").is_file(), rule
    modules = {p.stem for p in STAGES.glob("*.py")} - {"__init__"}
    assert modules == {entry.stage for entry in RULES.values()}, "a stage module without a rule"


def _calls(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return names


def test_trainers_share_the_one_training_skeleton():
    trainers = sorted([*STAGES.glob("train_*.py"), STAGES / "pretrain.py"])
    assert [p.stem for p in trainers] == ["pretrain", "train_cam", "train_csd", "train_deeplab", "train_irn",
                                          "train_mctformer", "train_mctformer_csd", "train_seco"]
    for path in trainers:
        calls = _calls(path)
        assert "train_main" in calls, f"{path.name} does not run pipeline.runtime.train.train_main"
        assert not calls & {"run_loop", "save_final", "wrap_ddp", "select_device"}, path.name
    # Only the skeleton runs the loop and writes final models.
    users = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")
             if "run_loop" in _calls(p) and p.parent.name != "bench"}
    assert users == {"runtime/train.py"}, users


def test_label_constants_are_defined_once():
    hits = []
    for path in ROOT.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id in ("IGNORE_INDEX", "UNCERTAIN") for t in node.targets):
                hits.append(path.relative_to(ROOT).as_posix())
    assert sorted(hits) == ["data/labels.py", "data/labels.py"], hits


def test_no_stage_code_hash_includes_the_rule_table():
    from pipeline.provenance import dependency_files

    for path in sorted(STAGES.glob("*.py")):
        if path.name == "__init__.py":
            continue
        files = {f.relative_to(ROOT).as_posix() for f in dependency_files(f"pipeline.stages.{path.stem}", ROOT)}
        assert "rules.py" not in files, f"{path.name} imports pipeline.rules: editing the rule table would rerun it"


def test_config_slice_keeps_sections_and_drops_excluded_subtrees():
    from pipeline.rules import config_slice, stage_cfg

    cfg = {"seed": 1, "seco": {"lr": 0.1, "infer": {"logits_stride": 4}}, "masks": {"methods": {"a": 1, "b": 2}}}
    assert config_slice(cfg, ("seed", "masks.methods.a")) == {"seed": 1, "masks": {"methods": {"a": 1}}}
    assert config_slice(cfg, ("seco", "-seco.infer")) == {"seco": {"lr": 0.1}}
    assert cfg["seco"]["infer"] == {"logits_stride": 4}, "the caller's config must stay whole"
    assert config_slice(cfg, ("seed", "-seco.infer")) == {"seed": 1}
    # SeCo's inference cache format is infer_seco's alone: changing it reruns only that stage
    changed = {**cfg, "seco": {**cfg["seco"], "infer": {"logits_stride": 3}}}
    for rule, same in (("train_seco", True), ("tag_patches", True), ("infer_seco", False)):
        assert (stage_cfg(cfg, rule) == stage_cfg(changed, rule)) is same, rule
