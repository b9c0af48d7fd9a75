"""MoLe-VLA inference library: model, policy, runtimes, control logic, data, simulation.

Importing this package is cheap: torch, onnxruntime, tensorrt and mujoco load where used.
"""

__version__ = "0.1.0"
