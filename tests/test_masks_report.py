"""Summary table, HTML tables, bar charts and qualitative rows from per-stage evaluation files."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pipeline.data import open_dataset
from pipeline.io.h5store import ArtifactWriter
from pipeline.report.draw import bar_chart, jet
from pipeline.report.subset import qualitative_ids
from pipeline.stages.report_qualitative import main as qualitative_main
from pipeline.stages.summarize import COLUMNS
from pipeline.stages.summarize import main as summarize_main
from tests.masks_helpers import default_sections, tiny_cfg, write_fake_cams, write_index

CLASSES = ["background", "horse", "boat"]  # not sorted: tables keep the dataset order


def _stage(miou: float, **extra) -> dict:
    return {"miou": miou, "per_class_iou": {c: miou for c in CLASSES}, "cooccurrence_confusion": {"horse->person": 0.5},
            "cooccurrence_confusion_mean": 0.5, "context_false_activation": {"water": 0.2},
            "context_false_activation_mean": 0.2, **extra}


def _write(path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


def test_summary_table_and_report_files(tmp_path):
    ev = {}
    for m, base in (("baseline", 0.3), ("csd", 0.35)):
        ev[m] = (_write(tmp_path / f"{m}_seed.json", _stage(base)),
                 _write(tmp_path / f"{m}_masks.json", {"raw": _stage(base + 0.05, uncertain_fraction=0.2),
                                                        "crf": _stage(base + 0.1, uncertain_fraction=0.1)}),
                 _write(tmp_path / f"{m}_final.json", {"val": {"raw": _stage(base + 0.1), "crf": _stage(base + 0.12)},
                                                        "decoupled": {"raw": _stage(0.2), "crf": _stage(0.21)}}))
    ceiling = _write(tmp_path / "gt.json", {"class_names": CLASSES, "val": {"raw": _stage(0.6), "crf": _stage(0.64)}})
    out = {k: tmp_path / v for k, v in (("tsv", "s.tsv"), ("json", "s.json"), ("classes-tsv", "c.tsv"),
                                        ("html", "s.html"), ("classes-html", "c.html"), ("chart-val", "v.png"),
                                        ("chart-mask", "m.png"))}
    summarize_main(["--cfg", "{}", "--methods", "baseline", "csd", "--seed-evals", ev["baseline"][0], ev["csd"][0],
                    "--mask-evals", ev["baseline"][1], ev["csd"][1], "--final-evals", ev["baseline"][2], ev["csd"][2],
                    "--ceiling", ceiling, *(x for k, p in out.items() for x in (f"--{k}", str(p)))])
    lines = out["tsv"].read_text().splitlines()
    assert lines[0].split("\t") == list(COLUMNS) and [r.split("\t")[0] for r in lines[1:]] == ["baseline", "csd", "gt"]
    rows = {r["method"]: r for r in json.loads(out["json"].read_text())["rows"]}
    assert rows["csd"]["ratio_to_ceiling"] == (0.35 + 0.12) / 0.64 and rows["gt"]["ratio_to_ceiling"] == 1.0
    assert rows["baseline"]["context_fa_decoupled"] == 0.2 and rows["gt"]["seed_miou"] is None
    per_class = out["classes-tsv"].read_text().splitlines()
    assert "gt:val_crf" in per_class[0] and [r.split("\t")[0] for r in per_class[1:]] == CLASSES  # dataset order
    html = out["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "horse-&gt;person" in html
    assert "Per-class IoU" in out["classes-html"].read_text()
    for key in ("chart-val", "chart-mask"):
        with Image.open(out[key]) as img:
            assert img.format == "PNG" and img.width >= 480 and img.height > 300


def test_bar_chart_and_heat_map_draw_values():
    img = np.asarray(bar_chart(["a", "b"], {"x": [1.0, float("nan")], "y": [0.5, 0.25]}, "t"))[60:]  # below the legend
    blue = np.all(img == (31, 119, 180), axis=-1)
    orange = np.all(img == (255, 127, 14), axis=-1)
    assert blue.sum() > 0 and orange.sum() > 0
    assert np.ptp(np.nonzero(blue.any(1))[0]) > np.ptp(np.nonzero(orange.any(1))[0])  # 1.0 is taller than 0.5
    heat = jet(np.array([[0.0, 1.0]]))
    assert heat[0, 0, 2] > heat[0, 0, 0] and heat[0, 1, 0] > heat[0, 1, 2]  # blue -> red


def test_qualitative_rows_use_a_fixed_seeded_subset(tiny_synthetic, tmp_path):
    cfg = tiny_cfg(tiny_synthetic)
    cfg.update(default_sections("report"))
    cfg["report"]["qualitative_images"] = 3
    index = write_index(cfg, tmp_path / "index.json")
    ids = qualitative_ids(index, 3, cfg["seed"])
    assert ids == qualitative_ids(index, 3, cfg["seed"]) and len(ids) == 3 and ids != qualitative_ids(index, 3, 1)
    ds = open_dataset(cfg["dataset"])
    write_fake_cams(tmp_path / "cams.h5", ds, ids)
    for name in ("masks", "pred"):
        with ArtifactWriter(tmp_path / f"{name}.h5", "mask", ds.class_names, {}) as w:
            for i in ids:
                w.write_mask(i, ds.mask(i))
    common = ["--cfg", json.dumps(cfg), "--index", str(tmp_path / "index.json"), "--pred", str(tmp_path / "pred.h5")]
    qualitative_main([*common, "--method", "baseline", "--cams", str(tmp_path / "cams.h5"),
                      "--masks", str(tmp_path / "masks.h5"), "--out", str(tmp_path / "q.png")])
    qualitative_main([*common, "--method", "gt", "--out", str(tmp_path / "gt.png")])
    with Image.open(tmp_path / "q.png") as a, Image.open(tmp_path / "gt.png") as b:
        assert a.size == b.size and a.height > 3 * 128 and a.width > 5 * 128


def test_worst_images_are_the_lowest_iou_first():
    from pipeline.report.subset import worst_ids

    assert worst_ids({"a": 0.5, "b": 0.1, "c": float("nan"), "d": 0.1, "e": 0.9}, 3) == [("b", 0.1), ("d", 0.1), ("a", 0.5)]


def test_overlay_keeps_background_and_tints_objects():
    from pipeline.report.draw import overlay

    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [0, 1]], np.uint8)
    out = overlay(image, np.full((2, 2, 3), 200, np.uint8), mask)
    assert (out[:, 0] == 100).all() and (out[:, 1] == 160).all()


def test_training_curves_and_front_page(tmp_path):
    from pipeline.report.draw import line_panels
    from pipeline.report.front import display, front_html, read_curve

    csv = tmp_path / "metrics.csv"
    csv.write_text("iteration,loss,lr\n" + "".join(f"{i},{2.0 / (i + 1)},0.1\n" for i in range(50)))
    curve = read_curve(csv)
    assert curve[0] == (0.0, 2.0) and len(curve) == 50 and read_curve(tmp_path / "missing.csv") == []
    img = np.asarray(line_panels({"CAM": curve, "empty": []}))
    blue = np.all(img == (31, 119, 180), axis=-1)
    rows = np.nonzero(blue.any(1))[0]
    cols_first, cols_last = np.nonzero(blue[:, :150].any(0))[0], np.nonzero(blue.any(0))[0]
    assert rows.size and cols_first.size and cols_last.size  # a falling loss is drawn
    assert display(713.0, "cooc_val") == "> 10" and display(0.5, "cooc_val") == "0.500"
    summary = {"rows": [{"method": "baseline", "seed_miou": 0.3, "cooc_val": 713.0}, {"method": "gt"}], "ceiling": "gt"}
    page = front_html(summary, {"seed": "0", "commit": "abc"}, "<div>legend</div>", None, "seed: 0\n")
    assert "baseline" in page and "gt (ceiling)" in page and "&gt; 10" in page and "713" not in page
    assert "<b>commit:</b> abc" in page and "Resolved config" in page
