"""Pre-processing shared by all backends: image checks and resize, instruction checks, initial noise."""

from __future__ import annotations

import numpy as np

from mole_inference.errors import InputError

MAX_IMAGE_SIDE = 4096  # larger frames are rejected instead of resized (an 8K frame costs ~100 ms to resize)
MAX_INSTRUCTION_CHARS = 1000


def check_image(image: object) -> np.ndarray:
    """Return `image` if it is a usable (H, W, 3) uint8 RGB frame, else raise InputError saying why."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"image: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image: expected shape (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise InputError(f"image: empty frame {image.shape}")
    if max(h, w) > MAX_IMAGE_SIDE:
        raise InputError(f"image: {w}x{h} exceeds the {MAX_IMAGE_SIDE}px limit; downscale at the camera")
    return image


def check_instruction(instruction: object) -> str:
    """Return a stripped, non-empty instruction string, else raise InputError."""
    if not isinstance(instruction, str):
        raise InputError(f"instruction: expected a string, got {type(instruction).__name__}")
    text = instruction.strip()
    if not text:
        raise InputError("instruction: empty")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InputError(f"instruction: {len(text)} characters exceeds {MAX_INSTRUCTION_CHARS}")
    return text


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Checked RGB frame -> (size, size, 3) uint8 (area filter when shrinking)."""
    import cv2

    image = check_image(image)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_chw_float(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return (np.ascontiguousarray(image.transpose(2, 0, 1))[None].astype(np.float32)) / 255.0


def initial_noise(seed: int | None, chunk: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Standard normal (1, C, A) float32 from `seed`, or from the policy's own generator when None.

    Drawn with numpy so every backend starts DDIM from the same noise for the same seed.
    """
    gen = np.random.default_rng(seed) if seed is not None else rng
    return gen.standard_normal((1, chunk, dim)).astype(np.float32)
