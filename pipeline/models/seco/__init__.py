"""SeCo (Separate and Conquer, CVPR'24): network, online pseudo labels, tagging, training views.

    network   SeCoNet (ViT encoder, CAM/aux heads, ASPP decoder, projection head, EMA L-teacher,
              prototypes, key queue), ema_update
    pseudo    multi-scale CAMs, thresholds, ROI mask, PAR-refined dual-threshold seg labels
    separate  patch positions and tags (online), local crops, offline box mapping
    data      SeCoTrainDataset (training crop, strong and weak views, offline patches)
"""

from pipeline.models.seco.network import ASPP, ProjectionHead, SeCoNet, ViTEncoder, ema_update

__all__ = ["ASPP", "ProjectionHead", "SeCoNet", "ViTEncoder", "ema_update"]
