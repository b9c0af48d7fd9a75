"""Control config: defaults valid, YAML-style dict round trip, errors name the field and the value."""

import math

import pytest

from mole_inference.config.base import from_dict, to_dict
from mole_inference.config.control import (
    ControlConfig,
    MuxConfig,
    SafetyConfig,
    SchedulerConfig,
    WatchdogConfig,
)
from mole_inference.errors import ConfigError


def test_defaults_and_round_trip():
    cfg = ControlConfig()
    assert cfg.scheduler.control_dt == pytest.approx(0.02)
    again = from_dict(ControlConfig, to_dict(cfg))
    assert again == cfg
    assert isinstance(again.safety.workspace_min, tuple)


def test_nested_override_from_dict():
    data = {"safety": {"workspace_max": [0.7, 0.3, 0.6]}, "mux": {"fallback": "teleop"}}
    cfg = from_dict(ControlConfig, data)
    assert cfg.safety.workspace_max == (0.7, 0.3, 0.6) and cfg.mux.fallback == "teleop"


@pytest.mark.parametrize(("cls", "kwargs", "needle"), [
    (SchedulerConfig, {"action_dt": 0.01}, "action_dt=0.01"),
    (SchedulerConfig, {"control_rate_hz": 0.0}, "control_rate_hz=0.0"),
    (SchedulerConfig, {"ensemble_decay": math.nan}, "ensemble_decay=nan"),
    (SchedulerConfig, {"ensemble_horizon": 0}, "ensemble_horizon=0"),
    (SafetyConfig, {"max_step_translation": -0.01}, "max_step_translation=-0.01"),
    (SafetyConfig, {"max_step_rotation": 4.0}, "max_step_rotation=4.0"),
    (SafetyConfig, {"max_target_distance": math.inf}, "max_target_distance=inf"),
    (SafetyConfig, {"workspace_min": (0.2, -0.4)}, "workspace_min=(0.2, -0.4)"),
    (SafetyConfig, {"workspace_max": (0.8, -0.5, 0.7)}, "workspace_max=(0.8, -0.5, 0.7)"),
    (WatchdogConfig, {"max_pose_age": 0.0}, "max_pose_age=0.0"),
    (MuxConfig, {"max_consecutive_rejections": -1}, "max_consecutive_rejections=-1"),
    (MuxConfig, {"teleop_timeout": -0.2}, "teleop_timeout=-0.2"),
])
def test_errors_name_field_and_value(cls, kwargs, needle):
    with pytest.raises(ConfigError, match="must") as info:
        cls(**kwargs)
    assert needle in str(info.value)


def test_dict_errors_give_the_path():
    with pytest.raises(ConfigError, match=r"scheduler\.action_dt=0\.001"):
        from_dict(ControlConfig, {"scheduler": {"action_dt": 0.001}})
    with pytest.raises(ConfigError, match=r"mux\.fallback: 'teleopp' is not one of .*did you mean 'teleop'"):
        from_dict(ControlConfig, {"mux": {"fallback": "teleopp"}})
    with pytest.raises(ConfigError, match=r"safety\.max_step_translaton: unknown.*'max_step_translation'"):
        from_dict(ControlConfig, {"safety": {"max_step_translaton": 0.01}})


def test_cross_field_check():
    with pytest.raises(ConfigError, match=r"watchdog\.max_chunk_age=0\.01"):
        ControlConfig(watchdog=WatchdogConfig(max_chunk_age=0.01))


@pytest.mark.parametrize("bad", [-0.01, math.nan, math.inf])
def test_max_future_stamp_is_validated(bad):
    with pytest.raises(ConfigError, match="max_future_stamp"):
        WatchdogConfig(max_future_stamp=bad)
    assert WatchdogConfig(max_future_stamp=0.0).max_future_stamp == 0.0
