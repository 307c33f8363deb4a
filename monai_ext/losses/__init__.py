"""monai_ext.losses: survival losses (Cox partial likelihood, discrete-time hazard).

Example:
    >>> from monai_ext.losses import CoxPHLoss
    >>> CoxPHLoss().reduction
    'mean'
"""

from monai_ext.losses.survival import CoxPHLoss, DiscreteTimeSurvivalLoss, discretize_survival_time

__all__ = ["CoxPHLoss", "DiscreteTimeSurvivalLoss", "discretize_survival_time"]
