"""MCTformer-V2 (Multi-class Token Transformer, CVPR 2022; xulianuwa/MCTformer) on a timm ViT.

    model   MCTformerV2 (C class tokens, PatchCAM head, per-block attention), its loss
    cams    class-to-patch attention x PatchCAM, patch-affinity refinement, multi-scale maps
    train   the official recipe for the training skeleton (AdamW, per-epoch cosine, timm transform)
"""
