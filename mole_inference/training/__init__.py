"""CogKD training of MoLe-VLA on episode bags (import the module you need; this package imports nothing heavy).

- `windows`: episode -> (frame, next `chunk_size` actions resampled to `action_dt`) samples.
- `dataset`: `BagDataset` (augmentation, q01/q99 stats, tokenized instructions), `load_table`.
- `sampler`: `MixedTaskSampler`, mixed-task weighted draws, rank-aware, a pure function of the step.
- `losses`: one function per equation (Eq. 3, 6, 14-18).
- `objective`: `MoLeObjective`, the student plus mu, returning Eq. 18 and its parts.
- `ema`: the EMA teacher.
- `distributed`: torchrun detection, FSDP (GPU) / DDP-gloo (CPU) wrapping.
- `train_state`: checkpoints with resume state (safetensors + JSON, no pickle).
- `metrics`: CSV + TensorBoard.
- `trainer`: `Trainer`, the loop behind `mole-vla train`.
"""
