# SeCo (Separate and Conquer): training and inference. Filled in by the SeCo issue.
