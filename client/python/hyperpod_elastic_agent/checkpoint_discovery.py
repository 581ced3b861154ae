"""Checkpoint types of the reference's checkpoint discovery. The tracker
that aggregates them lives in the agent (hyperpodrun's binary); workers
report with ipc.CheckpointDiscoverySocketClient."""
from enum import Enum


class CheckpointType(str, Enum):
    """What a rank saved: json.dumps() writes the value, so the agent sees
    "model_checkpoint" / "data_checkpoint"."""
    MODEL_CHECKPOINT = "model_checkpoint"
    DATA_CHECKPOINT = "data_checkpoint"
