"""The MoLe-VLA network: fused vision tower, MoLe-wrapped LLaMA decoder, routers, DiT action head."""
