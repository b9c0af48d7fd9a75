"""LeRobot dataset format v3.0 (codebase_version "v3.0"), written and read with pyarrow and PyAV only.

The `lerobot` package is not a dependency (its wheels pin torch and pull torchvision); the layout follows
LeRobot's own code (src/lerobot/datasets/utils.py, dataset_metadata.py, dataset_writer.py, video_utils.py,
compute_stats.py, scripts/convert_dataset_v21_to_v30.py) and docs (docs/source/lerobot-dataset-v3.mdx):

    meta/info.json                                    schema, fps, counts, path templates
    meta/stats.json                                   min/max/mean/std/count/q01..q99 per feature
    meta/tasks.parquet                                task (pandas index) -> task_index
    meta/episodes/chunk-XXX/file-YYY.parquet          one row per episode: offsets into data and videos, stats
    data/chunk-XXX/file-YYY.parquet                   one row per frame, many episodes per file
    videos/<camera key>/chunk-XXX/file-YYY.mp4        frames of many episodes back to back, per camera

Modules: `layout` (constants, info/tasks/stats files), `video` (PyAV encode/decode), `export` (episode bags
-> dataset, `export_lerobot`), `reader` (dataset -> per-episode rows, `read_lerobot`). Training on a dataset
goes through `mole_inference.training.sources`.
"""
