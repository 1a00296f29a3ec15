"""STAR's pipeline, one package per stage; arrows point one way, down this list:

- `pipeline.inference`: what serves results: evaluate, predict, explain, report files and plots.
- `pipeline.training`: what trains: configs and recipes, datasets over a cache, augmentation, the loop,
  checkpoints and the metrics it validates with.
- `pipeline.extraction`: what extracts and caches: backbone weights, the zarr feature and skeleton stores.
- `pipeline.sources`: what reads sources: datasets, the annotation index, video, clips, poses, generated data.
- `pipeline.core`: what every stage uses: the error type, file reading, progress, text, RNG state, devices.

Nothing here imports Prefect (`flows/` wraps these functions) or the CLI. The map with its arrows is in
docs/design.md; `tests/docs/test_layers.py` keeps it true.
"""
