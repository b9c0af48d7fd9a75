"""ROS-free real-time control logic: chunk scheduler, safety envelope, watchdog, teleop mux (pure numpy)."""

from mole_inference.control.loop import ControlLoop
from mole_inference.control.mux import Mode, SwitchEvent, TeleopMux
from mole_inference.control.safety import Command, SafetyEnvelope, SafetyFlag, Source
from mole_inference.control.scheduler import ChunkScheduler
from mole_inference.control.transforms import Pose
from mole_inference.control.watchdog import Fault, Health, Watchdog

__all__ = [
    "ChunkScheduler",
    "Command",
    "ControlLoop",
    "Fault",
    "Health",
    "Mode",
    "Pose",
    "SafetyEnvelope",
    "SafetyFlag",
    "Source",
    "SwitchEvent",
    "TeleopMux",
    "Watchdog",
]
