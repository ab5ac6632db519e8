"""CSD (Cross-domain Semantic Decoupling, BMVC 2023) on any CAM model: IRN's CAM classifier
(method `csd`) and MCTformer-V2 (method `mctformer_csd`).

Single-label training images (source domain) lend their round-1 object masks to every training
image (target domain) through co-occurrence-oriented copy-paste; pixel-wise consistency losses
tie the pasted image's CAMs to the source's. The reference is the first author's unfinished
PSD_WSSS code (see docs/CSD.md and the spec in ../shared/reference/).

    cooccurrence  class co-occurrence prior and paste-class sampling
    masks         round-1 source masks (CAM seeds by dual thresholds, or CRF masks)
    paste         foreground / background copy-paste and the paste-pair dataset
    losses        min-max normalisations, FG/BG consistency, purity weights
    adapter       what CSD needs from a CAM model, the source prior and the shared CSD step
    model         IRN's CAM classifier as a CSD model (LogitsAndCams); train: its training method
    mctformer     MCTformer-V2 as a CSD model (MCTformerMaps) and its training method
"""
