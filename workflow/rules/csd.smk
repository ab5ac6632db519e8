# CSD (Cross-domain Semantic Decoupling) on the CAM baseline. Filled in by the CSD issue.
