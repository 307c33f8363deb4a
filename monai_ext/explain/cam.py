"""Grad-CAM / Grad-CAM++ over ``monai.visualize`` with automatic target-layer selection.

:func:`find_target_layer` runs one probe forward pass and returns the name of the last module whose output
is still a spatial feature map ``(B, C, *spatial)`` with every spatial size ``>= min_spatial``. For MONAI's
DenseNet121 on 224x224 inputs that is ``class_layers.relu``; for the small patches of our bundles (where the
last block is 1x1 or 2x2) it falls back to an earlier, finer transition; for
:class:`monai_ext.networks.ImageTabularNet` it is ``condition`` (the FiLM/DAFT-conditioned fused map) or
``fusion`` (concat conditioning / no tabular input).

:func:`grad_cam` wraps ``monai.visualize.GradCAM`` / ``GradCAMpp``. Two things differ from calling them
directly: maps are normalised per sample to ``[0, 1]`` with 1 = most important (MONAI's default normaliser
maps the maximum to 0), and per-sample target classes are handled correctly (MONAI's ``class_score`` with a
``(B,)`` index sums the scores of every sample's class over every sample, so samples are grouped by class).
Extra network inputs (``tabular=``, ``presence=``) are bound with :class:`BoundInputs`.

Example:
    >>> import torch
    >>> from monai_ext.networks import build_densenet
    >>> net = build_densenet(121, 2, 1, 2, init_features=4, growth_rate=4).eval()
    >>> x = torch.rand(2, 1, 64, 64)
    >>> find_target_layer(net, x)
    'class_layers.relu'
    >>> grad_cam(net, x).shape
    torch.Size([2, 1, 64, 64])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.visualize import GradCAM, GradCAMpp
from torch import nn

__all__ = ["BoundInputs", "find_target_layer", "grad_cam", "normalize_per_sample"]

METHODS = {"gradcam": GradCAM, "gradcampp": GradCAMpp}


class BoundInputs(nn.Module):
    """Bind keyword inputs (``tabular``, ``presence``, ...) so a network can be called as ``net(image)``.

    Each bound tensor has batch size ``B`` (that of the image) or 1; a batch of 1 is expanded to the image's
    batch size, which occlusion sensitivity needs (it calls the network on many occluded copies of one image).

    Example:
        >>> from monai_ext.networks import ImageTabularNet
        >>> net = ImageTabularNet(2, 1, 1, 3, channels=(4, 8), strides=(2,))
        >>> bound = BoundInputs(net, tabular=torch.zeros(1, 3))
        >>> bound(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 2])
    """

    def __init__(self, model: nn.Module, **inputs: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.inputs = {k: v for k, v in inputs.items() if v is not None}
        self.train(model.training)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        kwargs = {}
        for key, value in self.inputs.items():
            if value.shape[0] == b:
                kwargs[key] = value.to(image.device)
            elif value.shape[0] == 1:
                kwargs[key] = value.to(image.device).expand(b, *value.shape[1:])
            else:
                raise ValueError(
                    f"BoundInputs: bound input `{key}` has batch size {value.shape[0]}; expected 1 or the "
                    f"image's batch size {b}."
                )
        return self.model(image, **kwargs)


def _spatial_output(out: object, spatial_dims: int) -> tuple[int, ...] | None:
    if isinstance(out, torch.Tensor) and out.dim() == spatial_dims + 2:
        return tuple(out.shape[2:])
    return None


def find_target_layer(
    model: nn.Module, image: torch.Tensor, min_spatial: int = 2, **forward_kwargs: torch.Tensor | None
) -> str:
    """Name of the last module whose output is a ``(B, C, *spatial)`` map, all sizes ``>= min_spatial``.

    Args:
        model: the classifier (any ``nn.Module`` taking the image first).
        image: an example input ``(B, C, *spatial)`` (one probe forward pass runs without gradients).
        min_spatial: smallest acceptable spatial size of the map (a 1x1 map cannot localise).
        forward_kwargs: other inputs of ``model`` (e.g. ``tabular=``).

    Example:
        >>> from monai_ext.networks import ImageTabularNet
        >>> net = ImageTabularNet(2, 1, 1, 3, channels=(4, 8), strides=(2,))
        >>> find_target_layer(net, torch.rand(1, 1, 16, 16), tabular=torch.zeros(1, 3))
        'condition'
    """
    if not isinstance(image, torch.Tensor) or image.dim() < 3:
        raise ValueError(
            f"find_target_layer: `image` must be a tensor (B, C, *spatial), got "
            f"{getattr(image, 'shape', type(image))}."
        )
    sd = image.dim() - 2
    order: list[str] = []
    handles = []

    def hook(name: str):
        def _record(_module, _inputs, output):
            size = _spatial_output(output, sd)
            if size is not None and min(size) >= min_spatial:
                order.append(name)

        return _record

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(image, **{k: v for k, v in forward_kwargs.items() if v is not None})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not order:
        raise ValueError(
            f"find_target_layer: no module of {type(model).__name__} outputs a {sd}D feature map with "
            f"spatial size >= min_spatial={min_spatial} for an image of shape {list(image.shape)}; use a "
            f"larger image or a smaller `min_spatial`, or pass `target_layer` explicitly."
        )
    return order[-1]


def normalize_per_sample(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each sample of ``(B, ...)`` to ``[0, 1]`` (a constant map becomes all zeros).

    Example:
        >>> normalize_per_sample(torch.tensor([[1.0, 3.0], [2.0, 2.0]])).tolist()
        [[0.0, 1.0], [0.0, 0.0]]
    """
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    out = torch.where(
        span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat)
    )
    return out.reshape(maps.shape)


def grad_cam(
    model: nn.Module,
    image: torch.Tensor,
    class_idx: int | torch.Tensor | None = None,
    target_layer: str | None = None,
    method: str = "gradcam",
    min_spatial: int = 2,
    forward_kwargs: Mapping[str, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Grad-CAM (``"gradcam"``) or Grad-CAM++ (``"gradcampp"``) maps ``(B, 1, *spatial)`` in ``[0, 1]``.

    Args:
        model: classifier returning logits ``(B, K)`` (for :class:`~monai_ext.networks.ImageTabularNet` the
            first ``num_classes`` columns are the class logits).
        image: ``(B, C, *spatial)``.
        class_idx: class to explain: an int for all samples, a ``(B,)`` tensor, or ``None`` (predicted class).
        target_layer: module name; ``None`` picks one with :func:`find_target_layer`.
        method: ``"gradcam"`` or ``"gradcampp"``.
        min_spatial: passed to :func:`find_target_layer`.
        forward_kwargs: other network inputs, e.g. ``{"tabular": t}``.

    Example:
        >>> from monai_ext.networks import ImageTabularNet
        >>> net = ImageTabularNet(3, 2, 1, 3, channels=(4, 8), strides=(2,))
        >>> maps = grad_cam(net, torch.rand(2, 2, 8, 8, 8), class_idx=1,
        ...                 forward_kwargs={"tabular": torch.zeros(2, 3)})
        >>> maps.shape, bool(maps.max() <= 1)
        (torch.Size([2, 1, 8, 8, 8]), True)
    """
    if method not in METHODS:
        raise ValueError(f"grad_cam: `method` must be one of {tuple(METHODS)}, got {method!r}.")
    kwargs = dict(forward_kwargs or {})
    bound = BoundInputs(model, **kwargs)
    if target_layer is None:
        target_layer = find_target_layer(model, image, min_spatial=min_spatial, **kwargs)
    elif target_layer not in dict(model.named_modules()):
        raise ValueError(
            f"grad_cam: `target_layer` {target_layer!r} is not a module of {type(model).__name__}."
        )
    b = image.shape[0]
    if class_idx is None:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = bound(image)
        model.train(was_training)
        targets = logits.argmax(dim=1)
        num_classes = getattr(model, "num_classes", None)
        if isinstance(num_classes, int) and num_classes > 0:
            targets = logits[:, :num_classes].argmax(dim=1)
    else:
        targets = torch.as_tensor(class_idx, device=image.device).long().reshape(-1)
        if targets.numel() == 1:
            targets = targets.expand(b)
        elif targets.numel() != b:
            raise ValueError(
                f"grad_cam: `class_idx` must be an int or have B={b} entries, got {targets.numel()}."
            )
    module = dict(model.named_modules())[target_layer]
    fwd_before, bwd_before = set(module._forward_hooks), set(module._backward_hooks)
    inplace = module.__dict__.get("inplace")
    full_inputs = dict(bound.inputs)
    was_training = model.training
    out = torch.zeros((b, 1, *image.shape[2:]), dtype=image.dtype, device=image.device)
    try:
        cam = METHODS[method](
            nn_module=bound, target_layers=f"model.{target_layer}", postprocessing=lambda m: m
        )
        with torch.enable_grad():
            # GradCAMpp in MONAI mis-broadcasts its (B,) score for B > 1: one sample at a time there
            groups = (
                [torch.tensor([i], device=image.device) for i in range(b)]
                if method == "gradcampp"
                else [torch.nonzero(targets == c).flatten() for c in torch.unique(targets)]
            )
            for sel in groups:
                c = targets[sel[0]]
                bound.inputs = {
                    k: v[sel.to(v.device)] if v.shape[0] == b else v for k, v in full_inputs.items()
                }
                out[sel] = cam(image[sel], class_idx=int(c)).detach().to(out.dtype)
    finally:
        # monai.visualize registers hooks for good and turns off `inplace`: undo both on the user's model
        for key in set(module._forward_hooks) - fwd_before:
            module._forward_hooks.pop(key)
        for key in set(module._backward_hooks) - bwd_before:
            module._backward_hooks.pop(key)
        if inplace is not None:
            module.inplace = inplace
        bound.inputs = full_inputs
        model.train(was_training)
    return normalize_per_sample(out)
