"""What extracts and caches: stage 1 from an annotation index to a zarr cache.

- `extract`: the plan and the work units of feature extraction, and skeleton-only extraction.
- `weights`: the MC3-18 weights a user names and their id in fingerprints.
- `store.FeatureCache`: the zarr feature store (`cache_layout`: per-sample shapes and states; `quantize`: 8-bit
  maps; `cache_info`: what `star cache info` reports; `cache_progress`: a live bar that polls the store).
- `skeleton_store.SkeletonCache`: the zarr store of full-rate skeletons (`--modality pose`).
"""
