"""The policy contract every backend implements, and the pre/post-processing shared by all of them."""

from mole_inference.policy.contract import ActionChunk, Policy, RoutingDecision

__all__ = ["ActionChunk", "Policy", "RoutingDecision"]
