"""Shared fixtures for the MuJoCo simulation tests: skip cleanly when MuJoCo, franky-sim or GL are missing."""

from __future__ import annotations

import importlib.util

import pytest

# Choose the headless GL backend (egl, else osmesa) before anything imports mujoco: it reads MUJOCO_GL once.
from mole_inference.sim.backend import select_gl_backend

select_gl_backend()


def missing_sim_reason() -> str | None:
    """Why the simulation cannot run here, or None when mujoco and franky-sim are installed."""
    if importlib.util.find_spec("mujoco") is None:
        return "mujoco is not installed (pip install 'mole-inference[sim]')"
    if importlib.util.find_spec("franky_sim") is None:
        return "franky-sim (FR3 model) is not installed (pip install --no-deps franky-sim)"
    return None


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module (`usefixtures`): the tiny models run fastest so, and several threads on a
    busy 2-core box are up to 100x slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pick_env():
    """A 10 Hz pick env rendering both cameras, shared by the read-only tests."""
    from mole_inference.sim.env import make_env

    env = make_env("pick", seed=0, cameras=("wrist", "front"))
    yield env
    env.close()


@pytest.fixture(scope="session")
def renderable(pick_env):
    """Skip rendering tests with the reason when no offscreen GL context can be made."""
    from mole_inference.errors import BackendUnavailableError

    try:
        pick_env.render("wrist")
    except BackendUnavailableError as exc:
        pytest.skip(f"no offscreen OpenGL: {exc}")
    return pick_env
