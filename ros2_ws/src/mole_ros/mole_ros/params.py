"""Parameters <-> typed dataclass configs: declare every field with a descriptor, read them back once.

A field becomes the parameter `<prefix>.<name>` (nested dataclasses nest with dots), its type comes from the
default value (bool, int, float, str, list/tuple of float or str), its description from
`field(metadata={"help": ...})`. Configs are read once (on configure), so parameters are declared read-only
unless `dynamic=True`: a `ros2 param set` that would be silently ignored fails loudly instead.
Validation stays in the dataclasses' `__post_init__`; a ConfigError names the field and the value.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node

from mole_inference.errors import ConfigError

T = TypeVar("T")


def help_field(default: Any, help: str) -> Any:
    """A dataclass field with a default and a parameter description (lists get a default_factory)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _param_type(value: Any) -> int:
    if isinstance(value, bool):
        return ParameterType.PARAMETER_BOOL
    if isinstance(value, int):
        return ParameterType.PARAMETER_INTEGER
    if isinstance(value, float):
        return ParameterType.PARAMETER_DOUBLE
    if isinstance(value, str):
        return ParameterType.PARAMETER_STRING
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return ParameterType.PARAMETER_STRING_ARRAY
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return ParameterType.PARAMETER_INTEGER_ARRAY
        return ParameterType.PARAMETER_DOUBLE_ARRAY
    raise TypeError(f"no ROS parameter type for {value!r}")


def _ros_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in value) and any(isinstance(v, float) for v in value):
        return [float(v) for v in value]
    return value


def declare_config(node: Node, obj: Any, prefix: str = "", skip: tuple[str, ...] = (),
                   dynamic: bool = False) -> None:
    """Declare one parameter per (nested) field of the dataclass instance `obj`, defaults from `obj`."""
    for f in dataclasses.fields(obj):
        name = f"{prefix}{f.name}"
        if name in skip:
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            declare_config(node, value, f"{name}.", skip, dynamic)
            continue
        descriptor = ParameterDescriptor(name=name, type=_param_type(value), read_only=not dynamic,
                                         description=f.metadata.get("help", f"{type(obj).__name__}.{f.name}"))
        if not node.has_parameter(name):
            node.declare_parameter(name, _ros_value(value), descriptor)


def read_config(node: Node, cls: type[T], prefix: str = "", skip: tuple[str, ...] = (),
                overrides: dict[str, Any] | None = None) -> T:
    """Build `cls` from the parameters declared by `declare_config` (skipped fields keep their defaults,
    `overrides` replace values by field name); ConfigError names the parameter on a bad value."""
    kwargs: dict[str, Any] = {}
    default = cls()
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if overrides and f.name in overrides:
            kwargs[f.name] = overrides[f.name]
            continue
        if name in skip:
            continue
        current = getattr(default, f.name)
        if dataclasses.is_dataclass(current):
            kwargs[f.name] = read_config(node, type(current), f"{name}.", skip)
            continue
        value = node.get_parameter(name).value
        kwargs[f.name] = tuple(value) if isinstance(current, tuple) else (list(value) if isinstance(current, list)
                                                                         else value)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"parameters {prefix or '(root)'}: {err}") from None
