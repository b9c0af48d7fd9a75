"""ROS-free rosbag I/O for demonstration episodes (the `rosbags` library, never rclpy).

Modules, one concept each (import the one you need; this package itself imports nothing heavy):

- `schema`: topic names, message types, QoS classes and the `/mole/ee_delta` encode/decode convention.
- `episode_meta`: `EpisodeMetadata` (the JSON on `/mole/episode`) and episode directory naming.
- `images`: Image / CompressedImage <-> RGB numpy conversion.
- `bag_writer`: `EpisodeBagWriter`, one rosbag2 bag (MCAP or sqlite3) per episode directory, crash-tolerant.
- `bag_recovery`: `recover_bag` rebuilds a bag cut off by SIGKILL (MCAP summary, metadata.yaml).
- `bag_reader`: `read_episode`, `list_episodes`, `iter_images`.
- `episode`: the `Episode` arrays and time alignment (`actions_after`, `pose_at`, `aligned_samples`).
"""
