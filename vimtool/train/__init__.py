"""Training: the ONE loop (`engine.train`) and the tasks that run through it (tokenizer, lm, t2i, reranker).

Import the engine's interface from here: `from vimtool.train import Task, TrainConfig, OptimizerSpec, StepOutput, train`.
"""

from vimtool.train.engine import EngineHandle, OptimizerSpec, StepOutput, Task, TrainConfig, train

__all__ = ["EngineHandle", "OptimizerSpec", "StepOutput", "Task", "TrainConfig", "train"]
