"""IRN's CAM baseline (jiwoon-ahn/irn): the ResNet CAM classifier (`model`), its training recipe
(`train`), and CAM inference and seed labels (`cams`)."""
