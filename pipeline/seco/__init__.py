"""SeCo (Separate and Conquer, CVPR'24): network, online pseudo labels, tagging, training, inference.

    network   SeCoNet (ViT encoder, CAM/aux heads, ASPP decoder, projection head, EMA L-teacher,
              prototypes, key queue), ema_update, build_seco_net
    pseudo    multi-scale CAMs, thresholds, ROI mask, PAR-refined dual-threshold seg labels
    par       PAR (pixel-adaptive refinement)
    tagging   the "separate" step: patch positions and tags (online and offline), local crops
    data      SeCoTrainDataset (training crop, strong and weak views, offline patches)
    losses    classification, PTC, tag-guided contrast (LIL/LIG), segmentation, energy
    train     the training step and the recipe for the training skeleton
    infer     CAM seeds, multi-scale segmentation logits, the logits cache fit
"""

from pipeline.seco.network import ASPP, ProjectionHead, SeCoNet, ViTEncoder, ema_update

__all__ = ["ASPP", "ProjectionHead", "SeCoNet", "ViTEncoder", "ema_update"]
