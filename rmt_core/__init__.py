"""RMT Lens core: the Recurrent Memory Transformer, checkpoints, tasks, training, evaluation and replay."""

from rmt_core.checkpoint import checkpoint_identity, default_checkpoint, load_checkpoint, save_checkpoint
from rmt_core.errors import CheckpointError, ReplayError, RMTError, TaskError, TraceError
from rmt_core.inputs import ModelInput, SegmentBatch, make_input
from rmt_core.layout import EncoderLayout
from rmt_core.model import RMT, PLACES, RMTConfig, RMTOutput, SegmentOutput, from_backbone, small_bert_config
from rmt_core.recurrence import activation_names, run, run_with_cache, run_with_hooks
from rmt_core.replay import RecordingPolicy, replay, replay_in_memory
from rmt_core.trace import InMemoryTrace, Trace

__version__ = "0.1.0"  # the one place of the version: pyproject.toml reads it, `rmt --version` prints it

__all__ = [
    "RMT", "RMTConfig", "RMTOutput", "SegmentOutput", "PLACES", "from_backbone", "small_bert_config",
    "load_checkpoint", "save_checkpoint", "default_checkpoint", "checkpoint_identity",
    "RMTError", "CheckpointError", "TaskError", "TraceError", "ReplayError",
    "RecordingPolicy", "replay", "replay_in_memory", "Trace", "InMemoryTrace",
    "ModelInput", "SegmentBatch", "make_input", "EncoderLayout",
    "run", "run_with_cache", "run_with_hooks", "activation_names",
]
