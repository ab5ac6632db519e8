"""DeepLab on pseudo masks (and on GT masks for the ceiling): the network (`model`), its training
data (`data`) and recipe (`train`), after kazuto1011/deeplab-pytorch."""
