"""RetinaNet factories, anchor presets and box conversions (checked against MONAI's own mask-to-box)."""

from __future__ import annotations

import pytest
import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.transforms.box_ops import convert_mask_to_box

from monai_ext.networks import (
    build_anchor_generator,
    build_retinanet,
    build_retinanet_detector,
    coco_to_monai_boxes,
    count_parameters,
    lung_nodule_anchor_preset,
    monai_to_coco_boxes,
    nuclei_anchor_preset,
    qupath_geojson_to_monai_boxes,
)


def test_nuclei_preset_scales_with_resolution():
    p25, p50 = nuclei_anchor_preset(0.25), nuclei_anchor_preset(0.5)
    assert p25.base_anchor_shapes[0] == (24.0, 24.0) and p50.base_anchor_shapes[0] == (12.0, 12.0)
    assert len(p50.feature_map_scales) == len(p50.returned_layers) + 1
    with pytest.warns(UserWarning, match="0.25-0.5 um/px"):
        nuclei_anchor_preset(2.0)
    with pytest.raises(ValueError, match="microns_per_pixel"):
        nuclei_anchor_preset(0.0)


def test_lung_nodule_preset_matches_monai_tutorial():
    preset = lung_nodule_anchor_preset()
    assert preset.base_anchor_shapes == ((6.0, 8.0, 4.0), (8.0, 6.0, 5.0), (10.0, 10.0, 6.0))
    assert preset.feature_map_scales == (1.0, 2.0, 4.0) and preset.returned_layers == (1, 2)
    coarse = lung_nodule_anchor_preset((1.40625, 1.40625, 2.5))
    assert coarse.base_anchor_shapes[2] == (5.0, 5.0, 3.0)
    with pytest.raises(ValueError, match="spacing"):
        lung_nodule_anchor_preset((1.0, 1.0))


def _detector(spatial_dims: int):
    preset = nuclei_anchor_preset(0.5) if spatial_dims == 2 else lung_nodule_anchor_preset()
    anchors = build_anchor_generator(preset)
    net = build_retinanet(
        spatial_dims,
        1,
        2,
        anchors.num_anchors_per_location()[0],
        preset.returned_layers,
        preset.conv1_t_stride,
        layers=(1, 1, 1, 1),
        block="basic",
        block_inplanes=(4, 8, 16, 32),
    )
    det = build_retinanet_detector(
        net, anchors, batch_size_per_image=16, min_neg=4, topk_candidates_per_level=50
    )
    return net, det


@pytest.mark.parametrize("spatial_dims", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_retinanet_detector_train_and_infer(spatial_dims, jit_script):
    torch.manual_seed(0)
    net, det = _detector(spatial_dims)
    assert isinstance(det, RetinaNetDetector)
    size = 64 if spatial_dims == 2 else 32
    images = torch.randn(2, 1, *([size] * spatial_dims))
    box = [[10.0, 12.0, 22.0, 26.0]] if spatial_dims == 2 else [[8.0, 8.0, 8.0, 16.0, 18.0, 12.0]]
    targets = [{"box": torch.tensor(box), "label": torch.tensor([1])} for _ in range(2)]
    det.train()
    losses = det(images, targets)
    total = losses["classification"] + losses["box_regression"]
    assert torch.isfinite(total)
    total.backward()
    assert net.feature_extractor.body.conv1.weight.grad.abs().sum() > 0
    det.eval()
    with torch.no_grad():
        out = det(images)
    assert out[0]["box"].shape[1] == 2 * spatial_dims
    assert set(out[0]) == {"box", "label", "label_scores"}
    head_out = net(images)
    scripted = jit_script(net.eval())
    torch.testing.assert_close(scripted(images)["classification"][0], net(images)["classification"][0])
    assert isinstance(head_out, dict)
    print(f"RetinaNet {spatial_dims}D (tiny ResNet) parameters: {count_parameters(net)}")


def test_coco_monai_conventions_agree_with_monai_mask_to_box():
    mask = torch.zeros(1, 20, 30)  # (C, H, W): rows 4..8, columns 10..22 inclusive
    mask[0, 4:9, 10:23] = 1
    monai_box, _ = convert_mask_to_box(mask, bg_label=0)
    coco = [[10, 4, 13, 5]]  # x = column, y = row, width, height
    torch.testing.assert_close(coco_to_monai_boxes(coco), monai_box.float())
    torch.testing.assert_close(monai_to_coco_boxes(monai_box), torch.tensor(coco, dtype=torch.float32))


def test_box_origin_downsample_and_geojson():
    boxes = torch.tensor([[1010.0, 2020.0, 40.0, 16.0], [1000.0, 2000.0, 0.0, 4.0]])
    monai = coco_to_monai_boxes(boxes, origin=(1000, 2000), downsample=4.0)
    assert monai.tolist() == [[5.0, 2.5, 9.0, 12.5], [0.0, 0.0, 1.0, 0.0]]
    torch.testing.assert_close(monai_to_coco_boxes(monai, origin=(1000, 2000), downsample=4.0), boxes)
    assert coco_to_monai_boxes([]).shape == (0, 4)
    multipolygon = {
        "type": "Feature",
        "geometry": {
            "type": "MultiPolygon",
            "coordinates": [[[[1, 2], [5, 2], [5, 9], [1, 2]]], [[[7, 3], [8, 3], [8, 4], [7, 3]]]],
        },
    }
    assert qupath_geojson_to_monai_boxes([multipolygon]).tolist() == [[2.0, 1.0, 9.0, 8.0]]
    with pytest.raises(ValueError, match=r"`boxes` must have shape \(N, 4\)"):
        coco_to_monai_boxes([[1, 2, 3]])
    with pytest.raises(ValueError, match="width/height"):
        coco_to_monai_boxes([[1, 2, -3, 4]])
    with pytest.raises(ValueError, match=r"`features\[0\]` must be a GeoJSON Feature"):
        qupath_geojson_to_monai_boxes(
            [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}]
        )


def test_retinanet_fpn_channels():
    """A narrower FPN shrinks the network; outputs keep their layout (one head output per level)."""
    preset = nuclei_anchor_preset(0.5)
    kwargs = dict(layers=(1, 1, 1, 1), block="basic", block_inplanes=(4, 8, 16, 32))
    wide = build_retinanet(2, 3, 2, 3, preset.returned_layers, preset.conv1_t_stride, **kwargs)
    narrow = build_retinanet(
        2, 3, 2, 3, preset.returned_layers, preset.conv1_t_stride, fpn_channels=16, **kwargs
    )
    assert narrow.feature_extractor.out_channels == 16
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters()) / 10
    x = torch.randn(1, 3, 64, 64)
    out_wide, out_narrow = wide(x), narrow(x)
    for key in out_wide:
        assert [t.shape for t in out_narrow[key]] == [t.shape for t in out_wide[key]]
    with pytest.raises(ValueError, match="fpn_channels"):
        build_retinanet(2, 3, 2, 3, preset.returned_layers, preset.conv1_t_stride, fpn_channels=0, **kwargs)
