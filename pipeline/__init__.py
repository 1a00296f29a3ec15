"""STAR data pipeline: datasets, annotation index, video decoding, feature cache, training."""
