"""ROS 2 nodes of the MoLe-VLA control service (thin wrappers over mole_inference)."""
