"""Pseudo masks from a method's seeds (`pseudo`: dual thresholds, single threshold, argmax) and
their dense-CRF refinement (`crf`, pydensecrf)."""
