"""Multimodal image registration on ITK: rigid, affine and B-spline with Mattes mutual information.

Example:
    >>> from monai_ext.registration import RegisterToReferenced, register_images
    >>> # result = register_images("t1c.nii.gz", "flair.nii.gz", transform_type="rigid")
"""

from monai_ext.registration.itk_registration import (
    TRANSFORM_TYPES,
    RegistrationError,
    RegistrationResult,
    RegistrationWarning,
    itk_transform_to_ras_matrix,
    load_image,
    register_images,
    resample_to_reference,
    to_itk_image,
)
from monai_ext.registration.sequences import AlignSequencesd, RegisterToImaged
from monai_ext.registration.transforms import RegisterToReference, RegisterToReferenced

__all__ = [
    "TRANSFORM_TYPES",
    "AlignSequencesd",
    "RegistrationError",
    "RegistrationResult",
    "RegistrationWarning",
    "RegisterToReference",
    "RegisterToReferenced",
    "RegisterToImaged",
    "itk_transform_to_ras_matrix",
    "load_image",
    "register_images",
    "resample_to_reference",
    "to_itk_image",
]
