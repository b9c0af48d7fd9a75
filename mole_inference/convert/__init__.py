"""Converters from public VLA checkpoints to our checkpoint folder (safetensors + config.yaml + action stats).

Each converter maps every source key or names it: mapped, ignored with a reason (unused by the source's own
forward pass), or unmatched. A checkpoint is written only when nothing is unmatched and every key of our model
is filled. `mapping` holds what all converters share; one module per source family (`cogact`).
"""
