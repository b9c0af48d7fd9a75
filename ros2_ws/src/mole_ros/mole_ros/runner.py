"""The canonical main(): init, build nodes, bring lifecycle nodes up, spin an executor, clean up.

Every node's `main()` and `mole-vla stack` go through `run_nodes`, so Ctrl-C / SIGTERM handling and cleanup
(recorder bags closed, inference threads stopped) are the same everywhere. Lifecycle nodes are configured and
activated here when their `autostart` parameter is true (the default); set it false when a lifecycle manager
(or `ros2 lifecycle set`) drives them.

One executor thread by default (a SingleThreadedExecutor). rclpy's executors are Python: building the wait set and
checking callback groups holds the GIL, and with four MultiThreadedExecutor threads that bookkeeping held it in
68 % of the samples of a profile of the policy node (py-spy --gil), so the 50 Hz control thread, which runs outside
the executor, waited up to 20-45 ms for it. Nothing here blocks inside a callback (the model, the control loop and
the gripper's action client each have their own thread; service calls are asynchronous), so one thread loses
nothing: `benchmarks/control_jitter.py --executor-threads 4 1` measures both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import rclpy
from lifecycle_msgs.msg import State as StateMsg
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node

NodeFactory = Callable[[], Node]
EXECUTOR_THREADS = 1  # inputs, services, recorder; the control loop, the model and the gripper have their own threads


def make_executor(threads: int, context=None) -> Executor:
    """A SingleThreadedExecutor for `threads` <= 1, else a MultiThreadedExecutor with that many threads."""
    if threads <= 1:
        return SingleThreadedExecutor(context=context)
    return MultiThreadedExecutor(num_threads=threads, context=context)


def autostart(node: LifecycleNode) -> bool:
    """Configure and activate `node` if its `autostart` parameter is true; False when a transition failed."""
    if not node.has_parameter("autostart"):
        node.declare_parameter("autostart", True, ParameterDescriptor(
            description="configure + activate on start (false: leave it to a lifecycle manager)", read_only=True))
    if not node.get_parameter("autostart").value:
        node.get_logger().info("autostart=false: waiting for lifecycle transitions")
        return True
    for trigger in (node.trigger_configure, node.trigger_activate):
        result = trigger()
        if result != TransitionCallbackReturn.SUCCESS:
            node.get_logger().error(f"{trigger.__name__} failed ({result}); the node stays up, unconfigured")
            return False
    return True


def shutdown_lifecycle(node: LifecycleNode) -> None:
    """Deactivate an active lifecycle node (stops its output) before destruction."""
    try:
        if node._state_machine.current_state[0] == StateMsg.PRIMARY_STATE_ACTIVE:
            node.trigger_deactivate()
    except Exception as err:  # shutting down anyway
        node.get_logger().warning(f"deactivate on shutdown failed: {err}")


def spin_nodes(nodes: Sequence[Node], threads: int = EXECUTOR_THREADS) -> None:
    """Spin until Ctrl-C / SIGTERM / rclpy.shutdown; always destroys the nodes (reverse order)."""
    executor = make_executor(threads)
    try:
        for node in nodes:
            executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in reversed(nodes):
            if isinstance(node, LifecycleNode):
                shutdown_lifecycle(node)
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)


def run_nodes(factories: Sequence[NodeFactory], args: list[str] | None = None,
              threads: int = EXECUTOR_THREADS) -> int:
    """Canonical main for one or more nodes in one process; returns an exit code."""
    rclpy.init(args=args)
    nodes: list[Node] = []
    try:
        for factory in factories:
            nodes.append(factory())
        ok = all(autostart(n) for n in nodes if isinstance(n, LifecycleNode))
        if not ok:
            nodes[0].get_logger().error("a lifecycle node failed to start; still spinning so it can be retried")
        spin_nodes(nodes, threads)
        nodes = []
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:  # only when construction or startup was interrupted
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
