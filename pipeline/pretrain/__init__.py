"""Supervised pretraining on the synthetic ImageNet stand-in (pipeline.data.pretrain_corpus), and its cache."""
