"""SeCo's training losses, each a small function tested on hand-built tensors.

    classification  multilabel_cls_loss (main and auxiliary CAM heads)
    ptc             affinity_labels, ptc_loss (ToCo's patch token contrast)
    contrast        lil_loss, lig_loss, rectify_tags (tag-guided contrast; official | supcon form)
    segmentation    balanced_seg_loss (background/foreground-balanced CE)
    energy          DenseEnergyLoss (the rloss CRF regulariser, dense Gaussian in PyTorch)
"""

from pipeline.seco.losses.classification import multilabel_cls_loss
from pipeline.seco.losses.contrast import CONTRAST_FORMS, lig_loss, lil_loss, rectify_tags
from pipeline.seco.losses.energy import DenseEnergyLoss, dense_energy, dense_gaussian_filter
from pipeline.seco.losses.ptc import affinity_labels, ptc_loss
from pipeline.seco.losses.segmentation import balanced_seg_loss

__all__ = [
    "CONTRAST_FORMS",
    "DenseEnergyLoss",
    "affinity_labels",
    "balanced_seg_loss",
    "dense_energy",
    "dense_gaussian_filter",
    "lig_loss",
    "lil_loss",
    "multilabel_cls_loss",
    "ptc_loss",
    "rectify_tags",
]
