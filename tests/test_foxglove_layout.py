"""launch/foxglove/mole.json against what the stack publishes: every topic, message path, filter field, diagnostic
key and user-script field must exist, so a misspelling fails here instead of showing an empty panel.

Message definitions come from the rosbags typestore the bags are written with (ROS 2 Jazzy = Humble/Kilted for
these types); topic names and types from `mole_inference.data.schema`; user scripts declare their output with a
`type Output = {...}` block and read input fields only through names `msg` / `*Msg`, which are checked too.
The message path grammar covered is the part Foxglove documents and the layout uses: `/topic.field.sub`,
`[i]`, `[a:b]`, `[:]`, filters `{field==value}` and `.@modifier`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from mole_inference.data.schema import (
    COMPRESSED_IMAGE_TYPE,
    EPISODE_TOPICS,
    IMAGE_TYPE,
    POSE_TYPE,
    TELEMETRY_TOPICS,
    default_typestore,
)

LAYOUT = Path(__file__).resolve().parents[1] / "launch" / "foxglove" / "mole.json"
STACK_TOPICS = {name: spec.msgtype for name, spec in {**EPISODE_TOPICS, **TELEMETRY_TOPICS}.items()}
SCRIPT_PREFIX = "/studio_script/"
FRAME_ID = "fr3_link0"  # mole_policy's `frame_id` default and the sim bridge's pose frame
PLOTTABLE = {"bool", "byte", "char", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
             "float32", "float64", "string", "number", "boolean"}
# node, nodetype values of rosbags' Nodetype: BASE, NAME (message), ARRAY, SEQUENCE
BASE, NAME, ARRAY, SEQUENCE = 1, 2, 3, 4

_STEP = re.compile(r"""\.(@?[A-Za-z_]\w*)|\[([^\]]*)\]|\{([^}]*)\}""")


def split_path(path: str) -> tuple[str, list[tuple[str, str]]]:
    """'/topic.a[0].b{c==1}' -> ('/topic', [('field', 'a'), ('index', '0'), ('field', 'b'), ('filter', 'c==1')])."""
    m = re.match(r"(/[A-Za-z0-9_/]*[A-Za-z0-9_])", path)
    if not m:
        raise ValueError(f"{path!r}: a message path starts with a topic name")
    topic, rest, steps = m.group(1), path[m.end():], []
    while rest:
        step = _STEP.match(rest)
        if not step:
            raise ValueError(f"{path!r}: cannot parse {rest!r}")
        field, index, filt = step.groups()
        steps.append(("field", field) if field is not None else ("index", index) if index is not None
                     else ("filter", filt))
        rest = rest[step.end():]
    return topic, steps


class Types:
    """Field lookups over the typestore plus the user scripts' `Output` types (pseudo message types)."""

    def __init__(self, scripts: dict[str, dict[str, str]]) -> None:
        self.ts = default_typestore()
        self.scripts = scripts  # output topic -> {field: "number" | "number[]" | "string" | "boolean"}

    def topic_type(self, topic: str) -> tuple:
        if topic in STACK_TOPICS:
            return (NAME, STACK_TOPICS[topic])
        if topic in self.scripts:
            return (NAME, f"script:{topic}")
        raise ValueError(f"unknown topic {topic!r} (stack topics: {sorted(STACK_TOPICS)}; "
                       f"script outputs: {sorted(self.scripts)})")

    def fields(self, msgtype: str) -> dict[str, tuple]:
        if msgtype.startswith("script:"):
            out = {}
            for name, kind in self.scripts[msgtype[len("script:"):]].items():
                base = (BASE, (kind.removesuffix("[]"), 0))
                out[name] = (SEQUENCE, (base, 0)) if kind.endswith("[]") else base
            return out
        return {name: node for name, node in self.ts.fielddefs[msgtype][1]}

    def resolve(self, path: str) -> tuple:
        """The type node a message path ends at; ValueError naming the bad step."""
        topic, steps = split_path(path)
        node = self.topic_type(topic)
        for kind, text in steps:
            if kind == "field" and text.startswith("@"):
                continue  # math modifier (.@abs, .@derivative, ...): keeps the value's type
            if kind == "field":
                if node[0] != NAME:
                    raise ValueError(f"{path!r}: .{text} on a non-message value")
                fields = self.fields(node[1])
                if text not in fields:
                    raise ValueError(f"{path!r}: {node[1]} has no field {text!r} (fields: {sorted(fields)})")
                node = fields[text]
            elif kind == "index":
                if node[0] not in (ARRAY, SEQUENCE):
                    raise ValueError(f"{path!r}: [{text}] on a non-array value")
                node = node[1][0]
            else:  # filter on the elements of the preceding slice
                field = re.split(r"\s*(==|!=|<=|>=|<|>)\s*", text)[0].strip()
                if node[0] != NAME or field not in self.fields(node[1]):
                    raise ValueError(f"{path!r}: filter field {field!r} is not a field of {node[1]}")
        return node


def parse_script(source: str) -> tuple[list[str], str, dict[str, str]]:
    """(inputs, output topic, Output fields) of a Foxglove user script."""
    inputs = re.search(r"export const inputs\s*=\s*\[([^\]]*)\]", source)
    output = re.search(r"export const output\s*=\s*\"([^\"]+)\"", source)
    out_type = re.search(r"type Output\s*=\s*\{([^}]*)\}", source)
    assert inputs and output and out_type, "a user script needs `inputs`, `output` and `type Output = {...}`"
    fields = dict(re.findall(r"(\w+)\s*:\s*(number\[\]|number|string|boolean)\s*;", out_type.group(1)))
    return re.findall(r"\"([^\"]+)\"", inputs.group(1)), output.group(1), fields


def leaves(node) -> list[str]:
    """Panel ids of a mosaic layout tree."""
    if isinstance(node, str):
        return [node]
    return leaves(node["first"]) + leaves(node["second"])


def check_layout(doc: dict, diagnostic_keys: set[str] | None = None) -> list[str]:
    """Every problem of the layout as one line each (empty: valid)."""
    errors: list[str] = []
    scripts: dict[str, dict[str, str]] = {}
    script_reads: list[tuple[str, str, str]] = []  # (script, input topic, field chain)
    for sid, script in doc.get("userNodes", {}).items():
        try:
            inputs, output, fields = parse_script(script["sourceCode"])
        except AssertionError as err:
            errors.append(f"script {sid}: {err}")
            continue
        if not output.startswith(SCRIPT_PREFIX):
            errors.append(f"script {sid}: output {output!r} must start with {SCRIPT_PREFIX}")
        if not fields:
            errors.append(f"script {sid}: `type Output` declares no fields")
        scripts[output] = fields
        for topic in inputs:
            if topic not in STACK_TOPICS:
                errors.append(f"script {sid}: input {topic!r} is not a stack topic")
        used = set(re.findall(r"Input<\"([^\"]+)\">", script["sourceCode"]))
        if used - set(inputs):
            errors.append(f"script {sid}: Input<...> of {sorted(used - set(inputs))} not in `inputs`")
        types = {STACK_TOPICS.get(t) for t in inputs}
        if len(types) != 1:
            errors.append(f"script {sid}: inputs of different types {types} (field reads cannot be checked)")
            continue
        for chain in re.findall(r"\b(?:msg|[a-z]\w*Msg)((?:\.\w+|\[[^\]]*\])+)", script["sourceCode"]):
            chain = re.sub(r"\.length$", "[0]", chain)
            script_reads.append((sid, inputs[0], chain))
    types = Types(scripts)
    for sid, topic, chain in script_reads:
        try:
            types.resolve(topic + chain)
        except ValueError as err:
            errors.append(f"script {sid} reads a missing field: {err}")

    ids = leaves(doc["layout"])
    if sorted(ids) != sorted(doc["configById"]):
        errors.append(f"layout tree {sorted(ids)} != configById {sorted(doc['configById'])}")

    def check_path(pid: str, path: str, plottable: bool) -> None:
        try:
            node = types.resolve(path)
        except ValueError as err:
            errors.append(f"{pid}: {err}")
            return
        if plottable and not (node[0] == BASE and node[1][0] in PLOTTABLE):
            errors.append(f"{pid}: {path!r} does not end at a number or string")
        for key in re.findall(r"\{key==\"([^\"]+)\"\}", path):
            if diagnostic_keys is not None and key not in diagnostic_keys:
                errors.append(f"{pid}: {path!r}: mole_policy publishes no diagnostic value {key!r}")

    for pid, cfg in doc["configById"].items():
        kind = pid.split("!")[0]
        if kind in ("Plot", "StateTransitions"):
            if not cfg.get("paths"):
                errors.append(f"{pid}: no paths")
            for p in cfg.get("paths", []):
                check_path(pid, p["value"], plottable=True)
                if kind == "Plot" and cfg.get("xAxisVal") == "index" and "[:]" not in p["value"]:
                    errors.append(f"{pid}: index x axis needs a [:] slice in {p['value']!r}")
        elif kind == "RawMessages":
            check_path(pid, cfg["topicPath"], plottable=False)
        elif kind == "Image":
            topic = cfg["imageMode"]["imageTopic"]
            if STACK_TOPICS.get(topic) not in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE):
                errors.append(f"{pid}: {topic!r} is not an image topic of the stack")
        elif kind == "3D":
            for topic in cfg["topics"]:
                if STACK_TOPICS.get(topic) not in (POSE_TYPE, IMAGE_TYPE, COMPRESSED_IMAGE_TYPE):
                    errors.append(f"{pid}: {topic!r} is not a pose or image topic of the stack")
            if cfg.get("followTf") != FRAME_ID:
                errors.append(f"{pid}: followTf {cfg.get('followTf')!r}, the poses are in {FRAME_ID!r}")
        else:
            errors.append(f"{pid}: panel type {kind!r} is not checked by this test (add it)")
    return errors


@pytest.fixture(scope="module")
def layout() -> dict:
    return json.loads(LAYOUT.read_text())


def policy_diagnostic_keys() -> set[str] | None:
    """What mole_policy's DiagnosticStatus carries (Telemetry.values() + what the node adds), when mole_ros imports."""
    try:
        from mole_ros.telemetry import Telemetry
    except ImportError:
        return None
    return set(Telemetry(0.02).values()) | {"mode", "image_age_ms", "missed_deadlines"}


def test_layout_matches_what_the_stack_publishes(layout):
    assert check_layout(layout, policy_diagnostic_keys()) == []


def test_layout_covers_the_issue_panels(layout):
    topics = json.dumps(layout)
    for topic in ("/wrist_camera/image_raw", "/mole/instruction", "/cartesian_impedance_controller/target_pose",
                  "/franka_robot_state_broadcaster/current_pose", "/mole/ee_delta", "/mole/routing", "/diagnostics",
                  "/mole/active_source"):
        assert topic in topics, topic
    kinds = {pid.split("!")[0] for pid in layout["configById"]}
    assert {"Image", "3D", "Plot", "StateTransitions", "RawMessages"} <= kinds


@pytest.mark.parametrize(("old", "new", "named"), [
    ("/mole/ee_delta.data[0]", "/mole/ee_delta.dat[0]", "'dat'"),  # field
    ("/mole/active_source.data", "/mole/active_sources.data", "/mole/active_sources"),  # topic
    ("/mole/ee_delta.layout.dim[0].label", "/mole/ee_delta.layout.dims[0].label", "'dims'"),
    ("/studio_script/mole_pose_gap.x_mm", "/studio_script/mole_pose_gap.x_m", "'x_m'"),  # script output field
    ("/studio_script/mole_routing.probs[:]", "/studio_script/mole_routes.probs[:]", "mole_routes"),  # script topic
    ('{hardware_id==\\"mole_vla\\"}', '{hardwareid==\\"mole_vla\\"}', "'hardwareid'"),  # filter field
    ('"/wrist_camera/image_raw"', '"/wrist_camera/image"', "/wrist_camera/image"),  # image panel topic
    ('\\"/mole/routing\\"]', '\\"/mole/route\\"]', "/mole/route"),  # script input
])
def test_a_misspelling_fails(layout, old, new, named):
    text = json.dumps(layout)
    assert old in text, old
    errors = check_layout(json.loads(text.replace(old, new)))
    assert any(named in e for e in errors), errors


def test_misspelled_script_reads_and_diagnostic_keys_fail(layout):
    broken = copy.deepcopy(layout)
    src = broken["userNodes"]["mole-pose-gap"]["sourceCode"]
    broken["userNodes"]["mole-pose-gap"]["sourceCode"] = src.replace("msg.pose.position.x", "msg.pose.postion.x", 1)
    assert any("postion" in e for e in check_layout(broken))
    keys = policy_diagnostic_keys() or {"inference_ms_last"}
    errors = check_layout(json.loads(json.dumps(layout).replace("jitter_p99_ms", "jitter_p99")), keys)
    assert any("jitter_p99" in e for e in errors)


def test_split_path():
    assert split_path('/diagnostics.status[:]{hardware_id=="x"}.values[0].@abs') == (
        "/diagnostics", [("field", "status"), ("index", ":"), ("filter", 'hardware_id=="x"'), ("field", "values"),
                         ("index", "0"), ("field", "@abs")])


def referenced_topics(doc: dict) -> set[str]:
    """Stack topics the layout reads (panels and user-script inputs; not the scripts' own outputs)."""
    paths: list[str] = []
    for cfg in doc["configById"].values():
        paths += [p["value"] for p in cfg.get("paths", [])]
        paths += [cfg[k] for k in ("topicPath",) if k in cfg]
        paths += list(cfg.get("topics", {})) + ([cfg["imageMode"]["imageTopic"]] if "imageMode" in cfg else [])
    topics = {split_path(p)[0] for p in paths}
    for script in doc.get("userNodes", {}).values():
        topics |= set(parse_script(script["sourceCode"])[0])
    return {t for t in topics if not t.startswith(SCRIPT_PREFIX)}


def test_policy_node_defaults_publish_the_layout_topics(layout):
    pytest.importorskip("rclpy", reason="ROS 2 rclpy wheels not installed")
    policy_node = pytest.importorskip("mole_ros.policy_node")
    cfg = policy_node.PolicyNodeConfig()
    node_topics = {v for k, v in vars(cfg).items() if k.endswith("_topic")} | {"/diagnostics"}
    used = referenced_topics(layout)
    assert len(used) >= 8
    assert used <= node_topics, used - node_topics
    assert cfg.frame_id == FRAME_ID
