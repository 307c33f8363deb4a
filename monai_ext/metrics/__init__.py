"""monai_ext.metrics: survival metrics (Harrell's C-index).

Example:
    >>> from monai_ext.metrics import ConcordanceIndexMetric
    >>> ConcordanceIndexMetric().higher_is_riskier
    True
"""

from monai_ext.metrics.concordance import ConcordanceIndexHandler, ConcordanceIndexMetric, concordance_index

__all__ = ["ConcordanceIndexHandler", "ConcordanceIndexMetric", "concordance_index"]
