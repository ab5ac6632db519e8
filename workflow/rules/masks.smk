# Pseudo masks, CRF, DeepLab, evaluation and report. Filled in by the masks/DeepLab issue.
