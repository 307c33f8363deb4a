"""Shared helpers for the multimodal networks: presence masks, input checks, parameter counts.

The multimodal convention (the same in data, networks, workflows, bundles and MONAI Label):

- the modalities arrive as one ``image`` tensor ``(B, M*C, *spatial)``, modality ``m`` in channels
  ``[m*C, (m+1)*C)``, in the order of the bundle's ``channel_def``;
- a missing modality is stored as all-zero channels;
- ``presence`` is an optional ``(B, M)`` bool (or 0/1) mask; when it is ``None`` it is inferred from the
  all-zero channels by :func:`infer_presence`;
- tabular data (clinical variables) is a second input ``tabular`` of shape ``(B, T)``, passed by
  MONAI's ``extra_forward_args`` or by a dict key of the batch (see ``monai_ext.engines``).

All functions here are TorchScript-compatible, so the networks that call them can be scripted.

Example:
    >>> import torch
    >>> image = torch.zeros(2, 4, 8, 8); image[0, 1] = 1.0; image[1] = 1.0
    >>> infer_presence(image, 4).tolist()
    [[False, True, False, False], [True, True, True, True]]
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "check_presence_rows",
    "count_parameters",
    "infer_presence",
    "is_exporting",
    "resolve_presence",
    "split_modalities",
]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (all, or only those with ``requires_grad``).

    Example:
        >>> count_parameters(torch.nn.Linear(3, 2))
        8
    """
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def infer_presence(image: torch.Tensor, num_modalities: int) -> torch.Tensor:
    """``(B, M)`` bool mask, ``True`` where modality ``m`` has any non-zero value in ``image``.

    Example:
        >>> infer_presence(torch.ones(1, 2, 4, 4), 2).tolist()
        [[True, True]]
    """
    b = image.shape[0]
    return image.reshape(b, num_modalities, -1).abs().amax(dim=-1) > 0


def resolve_presence(
    image: torch.Tensor,
    presence: torch.Tensor | None,
    num_modalities: int,
    channels_per_modality: int,
    spatial_dims: int,
    name: str,
) -> torch.Tensor:
    """Check ``image`` against the multimodal convention and return a ``(B, M)`` bool presence mask.

    Raises ``ValueError`` naming the network ``name``, the argument and the expected shape when
    ``image`` has the wrong number of channels or dimensions, ``presence`` has the wrong shape, or an
    explicit ``presence`` row is all False. When presence is inferred, a sample whose channels are all
    zero (a background window of a sliding-window inference, say) counts every modality as present:
    its input is all zeros either way, so the network gives its response to an empty image instead of
    failing the whole batch.

    Example:
        >>> resolve_presence(torch.ones(1, 2, 4, 4), None, 2, 1, 2, "Net").tolist()
        [[True, True]]
    """
    expected_c = num_modalities * channels_per_modality
    if image.dim() != spatial_dims + 2 or image.shape[1] != expected_c:
        raise ValueError(
            f"{name}: `image` must have shape (B, M*C={num_modalities}*{channels_per_modality}={expected_c}, "
            f"{spatial_dims} spatial dims), got {list(image.shape)}."
        )
    b = image.shape[0]
    if presence is None:
        mask = infer_presence(image, num_modalities)
        return mask | ~mask.any(dim=1, keepdim=True)
    else:
        if presence.dim() != 2 or presence.shape[0] != b or presence.shape[1] != num_modalities:
            raise ValueError(
                f"{name}: `presence` must have shape (B, M) = ({b}, {num_modalities}), "
                f"got {list(presence.shape)}."
            )
        mask = presence.to(image.device) != 0
    check_presence_rows(mask, name)
    return mask


def is_exporting() -> bool:
    """``True`` while ``torch.export`` (the dynamo ONNX exporter) or ``torch.jit.trace`` runs the model.

    Checks on tensor *values* (data-dependent branches) are skipped then: ``torch.export`` cannot branch
    on them and tracing would bake the branch taken into the graph. Under TorchScript it is ``False``,
    so scripted models keep their checks.

    Example:
        >>> is_exporting()
        False
    """
    if not torch.jit.is_scripting():
        return bool(torch.compiler.is_exporting() or torch.jit.is_tracing())
    return False


def check_presence_rows(mask: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if a row of the ``(B, M)`` presence ``mask`` is all False.

    The check reads tensor values, so it is skipped while exporting (:func:`is_exporting`): an exported
    graph has no way to raise, and a row without any modality then gives the network's answer to an
    empty input. In eager mode and TorchScript the error names the batch items.

    Example:
        >>> check_presence_rows(torch.tensor([[True, False]]), "Net")
        >>> check_presence_rows(torch.tensor([[False, False]]), "Net")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Net: `presence` has no modality present for batch item(s) [0]; ...
    """
    if is_exporting():
        return
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        idx: list[int] = torch.nonzero(empty).flatten().tolist()
        raise ValueError(
            f"{name}: `presence` has no modality present for batch item(s) {idx}; "
            f"at least one of the {mask.shape[1]} modalities is needed."
        )


def split_modalities(image: torch.Tensor, num_modalities: int) -> list[torch.Tensor]:
    """Split ``(B, M*C, *spatial)`` into ``M`` tensors ``(B, C, *spatial)``.

    Example:
        >>> [t.shape[1] for t in split_modalities(torch.zeros(1, 6, 4, 4), 3)]
        [2, 2, 2]
    """
    return list(torch.chunk(image, num_modalities, dim=1))
