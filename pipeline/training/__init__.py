"""What trains: stage 2 from a cache to checkpoints.

- `config`: `TrainConfig`, recipes of configs/, layering and `--set`; `splits`: a cache's splits and the carved
  validation; `data`: torch datasets over a feature cache or decoded video; `skeletons`: over a skeleton cache;
  `augment`: augmentations of maps and video; `sampling`: a batch order that reads whole cache units.
- `setup`: a run set up (data, model, optimiser, resume); `loop`: the epochs; `optimization`: optimiser and schedule;
  `distributed`: torchrun processes; `log`: metrics.jsonl, TensorBoard and the per-epoch line.
- `classifier`: STAR over cached maps or video; `checkpoints`: writing, reading and rebuilding models;
  `metrics`: the evaluation pass and its report, shared with `pipeline.inference`.
"""
