"""What reads sources: the datasets, their annotation index, video, clips and poses.

- `datasets`: readers of NTU RGB+D, Penn Action and custom folders, and the per-sample record they yield.
- `index`: the HDF5 annotation index built from a reader (incremental) and read by the later stages.
- `video`: probing and decoding video files and frame folders; `stream`: frames of a file, camera or URL as they
  arrive (live sources drop what they cannot keep up with); `clips`: which frames make a clip, and loading it;
  `geometry`: a clip's crop and resize.
- `layouts`: joint layouts (names, left/right pairs); `pose`: the built-in estimator, its tracker and mapping.
- `synthetic`: generated NTU- and Penn-format datasets for tests and the demo.
"""
