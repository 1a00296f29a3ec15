"""What serves results from a trained checkpoint.

- `evaluate`: `star evaluate`, a checkpoint on a split of its cache; `reports`: the report files it writes.
- `predict`: `star predict`, one video or pose file; `explain`: attention rollout (Fig. 6).
- `plots`: training curves, per-class accuracy, frame importance and cache statistics.
- `export`: `star export`, ONNX/TorchScript with a sidecar, checked against PyTorch; `runtime`: runs an export;
  `scorers`: a checkpoint or an export behind one `logits` call, for `star predict` and `star watch`.
- `watch`: `star watch`, a file, camera or stream classified window by window as it plays; `timeline`: its
  timeline.jsonl and events; `overlay`: its overlay video.
"""
