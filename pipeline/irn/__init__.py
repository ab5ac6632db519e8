"""IRN's CAM baseline (jiwoon-ahn/irn): the ResNet CAM classifier (`model`), its training recipe
(`train`), and CAM inference and seed labels (`cams`); IRN's inter-pixel relations: pair geometry
(`pathindex`), pair labels, losses and the random walk (`affinity`), the boundary/displacement
network (`edge`) and its training recipe (`irn_train`)."""
