"""Loading MuJoCo with a headless OpenGL backend chosen before the import (MUJOCO_GL is read at import)."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

from mole_inference.errors import BackendUnavailableError

log = logging.getLogger(__name__)

GL_ENV = "MUJOCO_GL"


def _egl_has_device() -> bool:
    """True when libEGL loads and reports at least one device (GPU or Mesa's software device)."""
    try:
        egl = ctypes.CDLL("libEGL.so.1")
    except OSError:
        return False
    get_proc = egl.eglGetProcAddress
    get_proc.restype = ctypes.c_void_p
    get_proc.argtypes = [ctypes.c_char_p]
    address = get_proc(b"eglQueryDevicesEXT")
    if not address:
        return False
    query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))(address)
    count = ctypes.c_int(0)
    return bool(query(0, None, ctypes.byref(count))) and count.value > 0


def select_gl_backend() -> str:
    """Set MUJOCO_GL when the user has not: egl when an EGL device exists, else osmesa; return the choice."""
    chosen = os.environ.get(GL_ENV, "").strip().lower()
    if chosen:
        return chosen
    if _egl_has_device():
        chosen = "egl"
    elif ctypes.util.find_library("OSMesa"):
        chosen = "osmesa"
    else:
        # Leave it unset: MuJoCo will try glfw, which needs a display; rendering fails with a clear error then.
        log.warning("neither EGL nor OSMesa found; offscreen rendering will need a display (MUJOCO_GL=glfw)")
        return ""
    os.environ[GL_ENV] = chosen
    log.debug("MUJOCO_GL=%s", chosen)
    return chosen


def import_mujoco() -> ModuleType:
    """Import mujoco after choosing the GL backend; BackendUnavailableError says what to install."""
    if "mujoco" in sys.modules:
        if not os.environ.get(GL_ENV):
            log.warning("mujoco was imported before MUJOCO_GL was set; offscreen rendering may fail")
        return sys.modules["mujoco"]
    select_gl_backend()
    try:
        return importlib.import_module("mujoco")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"MuJoCo is not installed ({exc}); install the sim extra: pip install 'mole-inference[sim]'"
        ) from None


def fr3_mjcf_path() -> Path:
    """Path of franky-sim's FR3 + hand MJCF, found without importing franky_sim (it needs pinocchio)."""
    spec = importlib.util.find_spec("franky_sim")
    if spec is None or spec.origin is None:
        raise BackendUnavailableError(
            "the FR3 model comes from the franky-sim wheel; install it with: pip install --no-deps franky-sim"
        )
    path = Path(spec.origin).parent / "assets" / "fr3.xml"
    if not path.is_file():
        raise BackendUnavailableError(f"franky-sim is installed but {path} is missing; reinstall franky-sim")
    return path
