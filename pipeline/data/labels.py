"""The label values every artifact and loss shares, defined once.

IGNORE_INDEX  255 in uint8 masks: void pixels of GT masks, and the uncertain band of pseudo masks
              (dual thresholds), so every loss and metric skips both the same way.
UNCERTAIN     -1 in signed maps: SeCo's ROI uncertain band and the uncertain patch / global tag.
"""

IGNORE_INDEX = 255
UNCERTAIN = -1
