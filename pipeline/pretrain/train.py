"""Supervised pretraining of one backbone on the pretraining corpus, as a method for the training skeleton.

As ImageNet weights are made: single-label classification with cross-entropy (label smoothing),
random-resized crops and flips, a linear warm-up then cosine decay per iteration. The family's
recipe (`pretrain.recipes.cnn | vit`): SGD with Nesterov momentum for ResNets (torchvision's
ImageNet recipe), AdamW for ViTs (DeiT's). The model is `timm.create_model(backbone,
num_classes=K, **backbone_kwargs)` (a ViT's `img_size` set to the pretraining crop; timm resamples
its position embedding when a section loads the file at another size), and the final file is its
plain state dict in safetensors, which `pretrained: <file>` loads through timm's own filters (the
classifier is dropped where the fine-tuned model has none).

After training, rank 0 measures the held-out accuracy on the corpus's val split (whole image
resized to the crop) and writes it beside the weights.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from pipeline.backbones import create_backbone
from pipeline.data.pretrain_corpus import read_split
from pipeline.data.transforms import hflip, normalize, to_chw
from pipeline.errors import PipelineError
from pipeline.io.atomic import atomic_path, write_text_atomic
from pipeline.runtime.device import autocast
from pipeline.runtime.distributed import unwrap, wrap_ddp
from pipeline.runtime.loader import ResumableLoader
from pipeline.runtime.train import TrainContext, TrainPlan

log = logging.getLogger("pipeline.pretrain")


def load_images(corpus: str, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    items = read_split(corpus, split)
    if not items:
        raise PipelineError(f"{corpus}/{split}.txt: empty split")
    images = [np.asarray(Image.open(path).convert("RGB")) for path, _ in items]
    return images, np.array([label for _, label in items], np.int64)


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator,
                        scale: tuple[float, float] = (0.35, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision's RandomResizedCrop (area share in `scale`, log-uniform aspect), bilinear."""
    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            img = img[y0 : y0 + ch, x0 : x0 + cw]
            break
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


class CorpusTrainDataset(Dataset):
    """Random-resized crop + flip + ImageNet normalisation; randomness from numpy's global RNG,
    which `ResumableLoader` seeds per (seed, epoch, index) draw (a resumed run sees the same crops)."""

    def __init__(self, images: list[np.ndarray], labels: np.ndarray, crop: int) -> None:
        self.images, self.labels, self.crop = images, labels, crop

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(np.random.randint(0, 2**31))
        img = random_resized_crop(self.images[i], self.crop, rng)
        if rng.random() < 0.5:
            img = hflip(img)
        return {"image": torch.from_numpy(to_chw(normalize(img))), "label": int(self.labels[i])}


def eval_batch(images: list[np.ndarray], crop: int) -> torch.Tensor:
    return torch.stack([torch.from_numpy(to_chw(normalize(np.asarray(Image.fromarray(im).resize((crop, crop), Image.BILINEAR)))))
                        for im in images])


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: list[np.ndarray], labels: np.ndarray, crop: int,
             device: torch.device, amp: str, num_classes: int, batch: int = 256) -> dict:
    """Top-1 / top-5 accuracy and per-class top-1 on held-out images."""
    was = model.training
    model.eval()
    preds, top5 = [], []
    for i in range(0, len(images), batch):
        with autocast(device, amp):
            logits = model(eval_batch(images[i : i + batch], crop).to(device)).float()
        preds.append(logits.argmax(1).cpu())
        top5.append(logits.topk(min(5, num_classes), 1).indices.cpu())
    model.train(was)
    pred, t5 = torch.cat(preds).numpy(), torch.cat(top5).numpy()
    correct = pred == labels
    per_class = [float(correct[labels == c].mean()) if (labels == c).any() else None for c in range(num_classes)]
    return {"top1": float(correct.mean()), "top5": float((t5 == labels[:, None]).any(1).mean()),
            "num_images": len(labels), "per_class_top1": per_class}


def build_model(spec: dict, num_classes: int) -> torch.nn.Module:
    kwargs = dict(spec["backbone_kwargs"])
    if spec["kind"] == "vit":
        kwargs["img_size"] = spec["crop_size"]
    return create_backbone(spec["backbone"], None, key="pretrain.backbone", num_classes=num_classes, **kwargs)


def build_optimizer(model: torch.nn.Module, recipe: dict, max_iters: int, iters_per_epoch: int):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token")) else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, lr=recipe["lr"], momentum=recipe["momentum"], nesterov=True)
    elif recipe["optimizer"] == "adamw":
        opt = torch.optim.AdamW(groups, lr=recipe["lr"], betas=(0.9, 0.999))
    else:
        raise PipelineError(f"config key pretrain.recipes.*.optimizer: unknown {recipe['optimizer']!r} (sgd | adamw)")
    warmup = min(recipe["warmup_epochs"] * iters_per_epoch, max_iters - 1)

    def factor(it: int) -> float:
        if it < warmup:
            return (it + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(1, max_iters - warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def build(ctx: TrainContext) -> TrainPlan:
    spec, device, amp = ctx.cfg["pretrain"], ctx.device, ctx.amp
    corpus = ctx.inputs["corpus"]
    manifest = json.loads((Path(corpus) / "manifest.json").read_text())
    num_classes = int(manifest["num_classes"])
    images, labels = load_images(corpus, "train")
    recipe = spec["recipe"]
    data = ResumableLoader(CorpusTrainDataset(images, labels, spec["crop_size"]), spec["batch_size"], seed=ctx.seed,
                           num_workers=spec.get("num_workers", 0))
    max_iters = len(data) * recipe["epochs"]
    net = build_model(spec, num_classes).to(device)
    opt, sched = build_optimizer(net, recipe, max_iters, len(data))
    model = wrap_ddp(net, device)
    smoothing = recipe["label_smoothing"]

    def step(it: int) -> dict[str, float]:
        batch = next(data)
        x, y = batch["image"].to(device), batch["label"].to(device)
        with autocast(device, amp):
            logits = model(x).float()
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}

    def save(out: str, weights: dict, meta: dict) -> None:
        from safetensors.torch import save_file

        t0 = time.perf_counter()
        val_images, val_labels = load_images(corpus, "val") if manifest["splits"]["val"]["num_images"] else ([], None)
        result = {"num_classes": num_classes, "backbone": spec["backbone"], "iterations": max_iters,
                  "epochs": recipe["epochs"], "train_images": len(images)}
        if val_images:
            result.update(evaluate(unwrap(model), val_images, val_labels, spec["crop_size"], device, amp, num_classes))
            log.info("held-out accuracy on %d corpus images: top-1 %.4f, top-5 %.4f (%.1f s)", result["num_images"],
                     result["top1"], result["top5"], time.perf_counter() - t0)
        eval_out = ctx.inputs.get("eval")
        if eval_out:
            write_text_atomic(eval_out, json.dumps(result, indent=2) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
        with atomic_path(out) as tmp:
            save_file(state, str(tmp), metadata={"pretrain": json.dumps({**meta, "num_classes": num_classes})})

    return TrainPlan(model, opt, sched, data, step, max_iters, spec.get("ckpt_every", 50),
                     weights=lambda: unwrap(model).state_dict(), meta={"pretrain": spec},
                     desc=f"pretrain {spec['backbone']}", save=save)
