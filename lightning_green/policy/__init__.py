"""Deciding: pure functions and small state objects over numpy arrays. Knows nothing of Lightning.

The stopping policy (plateau, marginal gain per kWh, energy budget) is :class:`StoppingPolicy`,
configured by :class:`StoppingConfig`; each check returns a :class:`StopDecision` whose
``reason`` is a :class:`StopReason`.
"""

from lightning_green.policy.config import StoppingConfig
from lightning_green.policy.decision import StopDecision, StopReason
from lightning_green.policy.history import History
from lightning_green.policy.learning_curve import CurveFit
from lightning_green.policy.plateau import PlateauState, evaluate_plateau
from lightning_green.policy.rules import decide
from lightning_green.policy.savings import StopSavings, project_savings
from lightning_green.policy.stopping import StoppingPolicy

__all__ = [
    "CurveFit",
    "History",
    "PlateauState",
    "StopDecision",
    "StopReason",
    "StopSavings",
    "StoppingConfig",
    "StoppingPolicy",
    "decide",
    "evaluate_plateau",
    "project_savings",
]

# Adapting batch size and precision to what measurement shows is cheapest.
from lightning_green.policy.batch_size import (
    BatchSizeDecision,
    BatchSizePolicy,
    BatchSizeReason,
    LRScalingRule,
    candidate_batch_sizes,
    choose_batch_size,
    relative_samples_to_target,
    scale_learning_rate,
)
from lightning_green.policy.noise_scale import GradientNoiseScale, noise_scale_components
from lightning_green.policy.precision import (
    PRECISIONS,
    REFERENCE_PRECISION,
    PrecisionDecision,
    PrecisionPolicy,
    PrecisionReason,
)

__all__ += [
    "PRECISIONS",
    "REFERENCE_PRECISION",
    "BatchSizeDecision",
    "BatchSizePolicy",
    "BatchSizeReason",
    "GradientNoiseScale",
    "LRScalingRule",
    "PrecisionDecision",
    "PrecisionPolicy",
    "PrecisionReason",
    "candidate_batch_sizes",
    "choose_batch_size",
    "noise_scale_components",
    "relative_samples_to_target",
    "scale_learning_rate",
]
