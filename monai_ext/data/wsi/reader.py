"""Region reads from whole-slide images that never load a whole level, with border padding.

Two MONAI-compatible readers (usable wherever MONAI takes a ``BaseWSIReader``, e.g.
``LoadImage(reader=...)`` or ``monai.data.PatchWSIDataset(reader=...)``) and one small handle:

- :class:`TiledTiffWSIReader`: MONAI's ``TiffFileWSIReader`` with a region read that decodes only
  the TIFF tiles (or strips) intersecting the region (``page.dataoffsets``/``databytecounts`` and
  ``page.decode``), and pyramid levels taken from ``series[0].levels`` (labels and macro images
  of SVS files are not levels);
- :class:`PaddedOpenSlideWSIReader`: MONAI's ``OpenSlideWSIReader`` with the same padding;
- :class:`Slide`: an open slide (tifffile, OpenSlide or cuCIM backend) with ``read_region``.

Regions are given as ``location`` = (row, column) of the top-left pixel in level-0 coordinates and
``size`` = (height, width) at the read level, as in MONAI. Pixels outside the slide are filled with
``fill`` (default 255, white glass) so a border patch always has the requested size.

Example:
    >>> from monai_ext.data.wsi import Slide
    >>> # with Slide("slide.tif") as s:
    >>> #     patch = s.read_region((1000, 2000), (512, 512), level=0)  # (512, 512, 3) uint8
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import CuCIMWSIReader, OpenSlideWSIReader, TiffFileWSIReader
from monai.utils import optional_import

__all__ = [
    "FILL",
    "INSTALL_HINT",
    "PaddedOpenSlideWSIReader",
    "Slide",
    "TiledTiffWSIReader",
    "check_slide_path",
    "read_tiff_region",
]

#: Default value for pixels outside the slide (white glass).
FILL = 255
INSTALL_HINT = 'pip install "monai-ext[wsi]"'
_BACKENDS = ("tifffile", "openslide", "cucim")


def check_slide_path(path: str | os.PathLike) -> Path:
    """Return ``path`` as a ``Path`` or raise ``FileNotFoundError`` naming it.

    Example:
        >>> check_slide_path("/no/such/slide.tif")  # doctest: +SKIP
        FileNotFoundError: whole-slide image '/no/such/slide.tif' does not exist ...
    """
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "does not exist"
        raise FileNotFoundError(f"whole-slide image '{p}' {what}; pass the path of a pyramidal TIFF/SVS file")
    return p


def _tifffile() -> Any:
    tifffile, ok = optional_import("tifffile")
    if not ok:
        raise ImportError(
            f"reading whole-slide images with the tifffile backend needs tifffile: {INSTALL_HINT}"
        )
    return tifffile


def _open_tiff(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Open ``path`` with tifffile; errors name the file, the problem and the fix."""
    p = check_slide_path(path)
    tifffile = _tifffile()
    try:
        tif = tifffile.TiffFile(p, **kwargs)
    except Exception as e:  # tifffile raises TiffFileError, ValueError, struct.error ...
        raise ValueError(
            f"whole-slide image '{p}' is not a readable TIFF ({type(e).__name__}: {e}); "
            "expected a tiled pyramidal TIFF/SVS (convert it, e.g. with `vips tiffsave --tile --pyramid`)"
        ) from e
    try:
        levels = tif.series[0].levels if tif.series else []
        page = levels[0].keyframe if levels else None
    except Exception as e:
        tif.close()
        raise ValueError(f"whole-slide image '{p}' has no readable image series ({e})") from e
    if page is None or len(page.shape) not in (2, 3) or page.imagelength < 1:
        tif.close()
        raise ValueError(
            f"whole-slide image '{p}' holds no 2D image (shape {getattr(page, 'shape', None)}); "
            "expected a tiled pyramidal TIFF/SVS"
        )
    return tif


def _levels(tif: Any) -> list[Any]:
    """Pyramid level pages (keyframes) of the first series."""
    return [lv.keyframe for lv in tif.series[0].levels]


def read_tiff_region(
    page: Any, top: int, left: int, height: int, width: int, fill: int | float = FILL
) -> np.ndarray:
    """Read ``[top:top+height, left:left+width]`` of a TIFF page, decoding only the needed segments.

    Rows/columns outside the page are set to ``fill``. Returns ``(height, width, samples)``.

    Example:
        >>> # with tifffile.TiffFile("slide.tif") as tif:
        >>> #     tile = read_tiff_region(tif.pages[0], 0, 0, 256, 256)
    """
    h_img, w_img = int(page.imagelength), int(page.imagewidth)
    spp = int(page.samplesperpixel) if page.planarconfig == 1 or page.samplesperpixel == 1 else 0
    if spp == 0 or int(page.imagedepth) != 1:  # planar-separate or volumetric: rare, fall back
        arr = np.asarray(page.asarray())
        arr = arr.reshape(h_img, w_img, -1) if arr.ndim == 2 else np.moveaxis(arr, 0, -1)
        return _crop_padded(arr, top, left, height, width, fill)
    out = np.full((height, width, spp), fill, dtype=page.dtype)
    y0, y1 = max(top, 0), min(top + height, h_img)
    x0, x1 = max(left, 0), min(left + width, w_img)
    if y0 >= y1 or x0 >= x1:
        return out
    if page.is_tiled:
        th, tw = int(page.tilelength), int(page.tilewidth)
        n_tx = (w_img + tw - 1) // tw
    else:
        th, tw = int(page.rowsperstrip) or h_img, w_img
        th = min(th, h_img)
        n_tx = 1
    fh = page.parent.filehandle
    decode = page.decode
    jpegtables = getattr(page, "jpegtables", None)
    offsets, counts = page.dataoffsets, page.databytecounts
    for ty in range(y0 // th, (y1 - 1) // th + 1):
        for tx in range(x0 // tw, (x1 - 1) // tw + 1):
            index = ty * n_tx + tx
            if counts[index] > 0:
                with fh.lock:
                    fh.seek(offsets[index])
                    data = fh.read(counts[index])
                if len(data) < counts[index]:
                    raise ValueError(
                        f"whole-slide image '{fh.path}' is truncated: segment {index} of page {page.index} "
                        f"ends past the end of the file; copy or export the slide again"
                    )
                try:
                    seg, _, _ = decode(data, index, jpegtables=jpegtables, _fullsize=page.is_tiled)
                except Exception as e:
                    raise ValueError(
                        f"whole-slide image '{fh.path}': cannot decode segment {index} of page {page.index} "
                        f"(compression {page.compression!s}): {type(e).__name__}: {e}; the file may be "
                        f"corrupt, or its codec missing ({INSTALL_HINT} installs imagecodecs)"
                    ) from e
            else:
                seg = None
            sy, sx = ty * th, tx * tw
            a0, a1 = max(y0, sy), min(y1, sy + th, h_img)
            b0, b1 = max(x0, sx), min(x1, sx + tw, w_img)
            if seg is None:
                out[a0 - top : a1 - top, b0 - left : b1 - left] = 0
                continue
            seg = seg.reshape(-1, seg.shape[-2], seg.shape[-1])  # (depth=1, rows, cols, samples)
            out[a0 - top : a1 - top, b0 - left : b1 - left] = seg[a0 - sy : a1 - sy, b0 - sx : b1 - sx]
    return out


def _crop_padded(
    arr: np.ndarray, top: int, left: int, height: int, width: int, fill: int | float
) -> np.ndarray:
    """``arr[top:top+height, left:left+width]`` (channel-last) padded with ``fill`` outside."""
    out = np.full((height, width, arr.shape[2]), fill, dtype=arr.dtype)
    y0, y1 = max(top, 0), min(top + height, arr.shape[0])
    x0, x1 = max(left, 0), min(left + width, arr.shape[1])
    if y0 < y1 and x0 < x1:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = arr[y0:y1, x0:x1]
    return out


def _to_mode(patch: np.ndarray, mode: str, channel_dim: int, dtype: Any, fill: int | float) -> np.ndarray:
    """Channel-last ``patch`` -> RGB/RGBA with the channel at ``channel_dim``."""
    if patch.shape[-1] == 1:
        patch = np.repeat(patch, 3, axis=-1)
    if mode == "RGB":
        patch = patch[..., :3]
    elif patch.shape[-1] == 3:
        patch = np.concatenate([patch, np.full(patch.shape[:2] + (1,), 255, patch.dtype)], axis=-1)
    return np.moveaxis(patch.astype(dtype, copy=False), -1, channel_dim)


class TiledTiffWSIReader(TiffFileWSIReader):
    """MONAI's tifffile WSI reader with tile-bounded, border-padded region reads.

    Args:
        fill: value of pixels outside the slide (default 255, white).
        kwargs: ``TiffFileWSIReader`` arguments (``level``, ``mpp``, ``channel_dim``, ``dtype``, ``mode``...).

    Example:
        >>> from monai.transforms import LoadImage
        >>> reader = TiledTiffWSIReader(level=0, channel_dim=0)
        >>> # img = LoadImage(reader=reader)("slide.tif")  # whole level 0; use get_data for regions
        >>> # patch, meta = reader.get_data(reader.read("slide.tif"), location=(0, 0), size=(256, 256))
    """

    def __init__(self, fill: int | float = FILL, **kwargs: Any):
        super().__init__(**kwargs)
        self.fill = fill

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Open one slide (or a list); missing files and non-TIFF files raise naming the file."""
        kw = {**self.kwargs, **kwargs}
        if isinstance(data, str | os.PathLike):
            return _open_tiff(data, **kw)
        return [_open_tiff(d, **kw) for d in data]

    @staticmethod
    def get_level_count(wsi: Any) -> int:
        """Number of pyramid levels (label/macro pages excluded)."""
        return len(wsi.series[0].levels)

    def get_size(self, wsi: Any, level: int) -> tuple[int, int]:
        """(height, width) of ``level``."""
        page = _levels(wsi)[level]
        return int(page.imagelength), int(page.imagewidth)

    def get_downsample_ratio(self, wsi: Any, level: int) -> float:
        """Level-0 rows per row of ``level``."""
        return float(self.get_size(wsi, 0)[0]) / float(self.get_size(wsi, level)[0])

    def get_mpp(self, wsi: Any, level: int) -> tuple[float, float]:
        """(y, x) microns per pixel of ``level`` from the resolution tags or the ``mpp=`` description."""
        page = _levels(wsi)[level]
        try:
            return super().get_mpp(_PagesView(wsi), level)
        except ValueError:
            desc = _levels(wsi)[0].description or ""
            for key in ("mpp=", "MPP = "):
                if key in desc:
                    v = float(desc.split(key, 1)[1].split("|")[0].split(";")[0].split()[0])
                    ds = self.get_downsample_ratio(wsi, level)
                    return v * ds, v * ds
            raise ValueError(
                f"whole-slide image '{self.get_file_path(wsi)}' has no resolution tags (level {level}, "
                f"page {page.index}); pass `level=` instead of `mpp=`"
            ) from None

    def _get_patch(
        self, wsi: Any, location: tuple[int, int], size: tuple[int, int], level: int, dtype: Any, mode: str
    ) -> np.ndarray:
        ds = self.get_downsample_ratio(wsi, level)
        top, left = (round(location[0] / ds), round(location[1] / ds))
        patch = read_tiff_region(_levels(wsi)[level], top, left, int(size[0]), int(size[1]), self.fill)
        return _to_mode(patch, mode, self.channel_dim, dtype, self.fill)


class _PagesView:
    """A ``wsi`` stand-in whose ``pages`` are the pyramid levels (for MONAI's ``get_mpp``)."""

    def __init__(self, tif: Any):
        self.pages = _levels(tif)


def _pad_via(
    get: Any,
    level_size: tuple[int, int],
    ds: float,
    location: tuple[int, int],
    size: tuple[int, int],
    fill: Any,
) -> np.ndarray:
    """Read the in-slide part of a region with ``get(location0, size)`` (channel-last) and pad it."""
    top, left = round(location[0] / ds), round(location[1] / ds)
    h, w = int(size[0]), int(size[1])
    y0, y1 = max(top, 0), min(top + h, level_size[0])
    x0, x1 = max(left, 0), min(left + w, level_size[1])
    if y0 >= y1 or x0 >= x1:
        return np.full((h, w, 3), fill, np.uint8)
    part = get((round(y0 * ds), round(x0 * ds)), (y1 - y0, x1 - x0))
    if (y0, x0, y1, x1) == (top, left, top + h, left + w):
        return part
    out = np.full((h, w, part.shape[-1]), fill, part.dtype)
    out[y0 - top : y1 - top, x0 - left : x1 - left] = part
    return out


class PaddedOpenSlideWSIReader(OpenSlideWSIReader):
    """MONAI's OpenSlide reader with border patches padded with ``fill`` (OpenSlide gives black/transparent).

    Example:
        >>> reader = PaddedOpenSlideWSIReader(channel_dim=-1)
        >>> # patch, _ = reader.get_data(reader.read("slide.tif"), location=(-100, 0), size=(256, 256))
    """

    def __init__(self, fill: int | float = FILL, **kwargs: Any):
        super().__init__(**kwargs)
        self.fill = fill

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """Open one slide (or a list); errors name the file, the problem and the fix."""
        paths = [data] if isinstance(data, str | os.PathLike) else list(data)
        openslide, ok = optional_import("openslide")
        if not ok:
            raise ImportError(
                f"the openslide backend needs openslide-python and openslide-bin: {INSTALL_HINT}"
            )
        out = []
        for d in paths:
            p = check_slide_path(d)
            try:
                out.append(openslide.OpenSlide(str(p)))
            except openslide.OpenSlideError as e:
                raise ValueError(
                    f"whole-slide image '{p}' cannot be opened by OpenSlide ({e}); expected a format "
                    "OpenSlide reads (tiled pyramidal TIFF, SVS, NDPI, MRXS...)"
                ) from e
        return out[0] if isinstance(data, str | os.PathLike) else out

    def _get_patch(
        self, wsi: Any, location: tuple[int, int], size: tuple[int, int], level: int, dtype: Any, mode: str
    ) -> np.ndarray:
        def get(loc: tuple[int, int], sz: tuple[int, int]) -> np.ndarray:
            img = wsi.read_region(
                location=(int(loc[1]), int(loc[0])), level=level, size=(int(sz[1]), int(sz[0]))
            )
            rgba = np.asarray(img)
            if mode == "RGBA":
                return rgba
            rgb = rgba[..., :3].copy()
            rgb[rgba[..., 3] == 0] = self.fill  # OpenSlide marks pixels without data transparent
            return rgb

        patch = _pad_via(
            get, self.get_size(wsi, level), self.get_downsample_ratio(wsi, level), location, size, self.fill
        )
        return _to_mode(patch, mode, self.channel_dim, dtype, self.fill)


class _PaddedCuCIM(CuCIMWSIReader):
    """cuCIM reader with border padding (used by :class:`Slide` when ``backend="cucim"``)."""

    def __init__(self, fill: int | float = FILL, **kwargs: Any):
        super().__init__(**kwargs)
        self.fill = fill

    def _get_patch(
        self, wsi: Any, location: tuple[int, int], size: tuple[int, int], level: int, dtype: Any, mode: str
    ) -> np.ndarray:
        cd, self.channel_dim = self.channel_dim, -1
        try:

            def get(loc: tuple[int, int], sz: tuple[int, int]) -> np.ndarray:
                return np.asarray(super(_PaddedCuCIM, self)._get_patch(wsi, loc, sz, level, dtype, mode))

            patch = _pad_via(
                get,
                self.get_size(wsi, level),
                self.get_downsample_ratio(wsi, level),
                location,
                size,
                self.fill,
            )
        finally:
            self.channel_dim = cd
        return _to_mode(patch, mode, self.channel_dim, dtype, self.fill)


class Slide:
    """An open whole-slide image: pyramid geometry, microns per pixel and padded region reads.

    Args:
        path: slide file.
        backend: ``"tifffile"`` (default; tile-bounded reads), ``"openslide"`` or ``"cucim"``.
        fill: value of pixels outside the slide (default 255, white glass).

    Example:
        >>> # with Slide("slide.tif", backend="openslide") as s:
        >>> #     s.level_shapes, s.mpp(0), s.read_region((0, 0), (256, 256), level=1).shape
    """

    def __init__(self, path: str | os.PathLike, backend: str = "tifffile", fill: int | float = FILL):
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
        self.path = check_slide_path(path)
        self.backend = backend
        cls = {"tifffile": TiledTiffWSIReader, "openslide": PaddedOpenSlideWSIReader, "cucim": _PaddedCuCIM}
        if backend == "cucim" and not optional_import("cucim")[1]:
            raise ImportError(
                "backend 'cucim' needs cuCIM: pip install cucim (CUDA) or use backend='tifffile'"
            )
        self.reader = cls[backend](fill=fill, channel_dim=-1)
        self.wsi = self.reader.read(self.path)
        n = self.reader.get_level_count(self.wsi)
        self.level_shapes: list[tuple[int, int]] = [
            tuple(self.reader.get_size(self.wsi, k)) for k in range(n)
        ]
        self.downsamples: list[float] = [self.level_shapes[0][0] / s[0] for s in self.level_shapes]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_shapes)

    def mpp(self, level: int = 0) -> tuple[float, float]:
        """(y, x) microns per pixel at ``level``; ``ValueError`` naming the file when unknown."""
        try:
            return tuple(float(v) for v in self.reader.get_mpp(self.wsi, level))  # type: ignore[return-value]
        except ValueError as e:
            raise ValueError(f"whole-slide image '{self.path}': microns per pixel unknown ({e})") from e

    def level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (1 % tolerance)."""
        ok = [k for k, d in enumerate(self.downsamples) if d <= downsample * 1.01]
        return max(ok) if ok else 0

    def read_region(
        self, location: tuple[int, int], size: tuple[int, int], level: int = 0, mode: str = "RGB"
    ) -> np.ndarray:
        """(height, width, 3) uint8 region; ``location`` = level-0 (row, col), ``size`` at ``level``."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"level must be in [0, {self.level_count - 1}] for '{self.path}', got {level}")
        if size[0] < 1 or size[1] < 1:
            raise ValueError(f"size must be positive (height, width), got {tuple(size)}")
        patch = self.reader._get_patch(
            self.wsi,
            (int(location[0]), int(location[1])),
            (int(size[0]), int(size[1])),
            level,
            np.uint8,
            mode,
        )
        return np.asarray(patch)

    def read_level(self, level: int) -> np.ndarray:
        """A whole (low-resolution) level as (height, width, 3) uint8."""
        return self.read_region((0, 0), self.level_shapes[level], level)

    def close(self) -> None:
        """Close the file."""
        wsis = self.wsi if isinstance(self.wsi, list) else [self.wsi]
        for w in wsis:
            if hasattr(w, "close"):
                w.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Slide('{self.path.name}', backend={self.backend!r}, levels={self.level_shapes})"
