"""monai_ext.export: TorchScript / ONNX export of networks and bundles, verified against eager PyTorch.

ONNX needs the optional ``export`` extra (``onnx``, ``onnxruntime``; ``onnxscript`` for the dynamo
exporter). TorchScript needs nothing extra.

Example:
    >>> import tempfile, torch
    >>> from monai_ext.networks import build_densenet
    >>> net = build_densenet(121, 3, 1, 2, init_features=4, growth_rate=4)
    >>> export_torchscript(net, torch.rand(1, 1, 32, 32, 32), tempfile.mkdtemp() + "/d.ts").num_outputs
    1
"""

from monai_ext.export.bundle import bundle_folder, bundle_input_shape, bundle_tabular_features, export_bundle
from monai_ext.export.network import (
    ExportMismatchError,
    ExportReport,
    PositionalInputs,
    compare_outputs,
    export_onnx,
    export_torchscript,
    flatten_outputs,
    onnx_session,
)

__all__ = [
    "ExportMismatchError",
    "ExportReport",
    "PositionalInputs",
    "bundle_folder",
    "bundle_input_shape",
    "bundle_tabular_features",
    "compare_outputs",
    "export_bundle",
    "export_onnx",
    "export_torchscript",
    "flatten_outputs",
    "onnx_session",
]
