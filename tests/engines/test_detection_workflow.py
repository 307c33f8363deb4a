"""monai_ext.engines.detection: datalist checks, metrics, Ignite iterations and the box writer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.data import MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from PIL import Image

from monai_ext.engines.detection import (
    DetectionCPM,
    DetectionEvalStep,
    DetectionJSONWriter,
    DetectionMAP,
    DetectionTrainStep,
    find_images,
    froc_sensitivities,
    load_detection_datalist,
)
from monai_ext.networks.detection import build_retinanet, build_retinanet_detector


def _dataset(tmp_path, items):
    (tmp_path / "images").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items}))
    return tmp_path


def test_datalist_remaps_labels_and_converts_coco(tmp_path):
    root = _dataset(
        tmp_path,
        [
            {"image": "images/a.png", "boxes": [[1, 2, 3, 4]], "box_labels": [3], "extra": "x"},
            {"image": "images/a.png", "boxes_coco": [[2, 1, 2, 2]], "box_labels": [1]},
            {"image": "images/a.png", "boxes": [], "box_labels": []},
        ],
    )
    out = load_detection_datalist(
        root,
        "training",
        box_key="boxes",
        label_key="box_labels",
        spatial_dims=2,
        coco_box_key="boxes_coco",
        label_map={1: 0, 3: 1},
    )
    assert sorted(out[0]) == ["box", "image", "label"]
    assert out[0]["box"].tolist() == [[1, 2, 3, 4]] and out[0]["label"].tolist() == [1]
    assert out[1]["box"].tolist() == [[1, 2, 3, 4]] and out[1]["label"].tolist() == [0]
    assert out[2]["box"].shape == (0, 4)
    assert find_images(root, "images/*.png")[0]["image"].endswith("a.png")


@pytest.mark.parametrize(
    "item, match",
    [
        ({"image": "images/b.png", "box": [[1, 2, 3, 4]], "label": [0]}, "does not exist"),
        ({"image": "images/a.png", "box": [[1, 2, 3]], "label": [0]}, "must be \\(N, 4\\)"),
        ({"image": "images/a.png", "box": [[1, 2, 3, 4]], "label": [0, 1]}, "1 boxes but 2"),
        ({"image": "images/a.png", "box": [[1, 2, 3, 4]], "label": [7]}, "not in label_map"),
        ({"image": "images/a.png", "label": [7]}, "no boxes"),
    ],
)
def test_datalist_errors_name_the_problem(tmp_path, item, match):
    root = _dataset(tmp_path, [item])
    with pytest.raises((ValueError, KeyError, FileNotFoundError), match=match):
        load_detection_datalist(root, "training", spatial_dims=2, label_map={0: 0, 1: 0})


def test_datalist_missing_folder_and_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_dir .*nope"):
        load_detection_datalist(tmp_path / "nope", "training")
    root = _dataset(tmp_path, [{"image": "images/a.png", "box": [], "label": []}])
    with pytest.raises(ValueError, match="'test'"):
        load_detection_datalist(root, "test")
    with pytest.raises(FileNotFoundError, match="no files matching"):
        find_images(root, "*.nii.gz")


def _out(pred, scores, gt):
    return {
        "pred_box": np.asarray(pred, float).reshape(-1, 4),
        "pred_label": np.zeros(len(scores), int),
        "pred_score": np.asarray(scores, float),
        "gt_box": np.asarray(gt, float).reshape(-1, 4),
        "gt_label": np.zeros(len(gt), int),
    }


def test_map50_counts_hits_and_misses():
    m = DetectionMAP(classes=["nucleus"])
    m.update([_out([[0, 0, 10, 10]], [0.9], [[0, 0, 10, 10]])])
    assert m.compute() == pytest.approx(1.0)
    m.reset()
    # one of two nuclei found (and the other prediction misses): AP about 0.5
    m.update([_out([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [[0, 0, 10, 10], [20, 20, 30, 30]])])
    assert 0.4 < m.compute() < 0.6
    with pytest.raises(KeyError, match="gt_box"):
        m.update([{"pred_box": [], "pred_label": [], "pred_score": []}])


def test_froc_sensitivity_per_false_positive_rate():
    # 2 images, 2 nodules; image 1: a hit (0.9) and a false positive (0.95); image 2: the nodule missed
    sens = froc_sensitivities(
        [np.array([[0, 0, 0, 4, 4, 4.0], [20, 20, 20, 24, 24, 24]]), np.zeros((0, 6))],
        [np.array([0.9, 0.95]), np.zeros(0)],
        [np.array([[1, 1, 1, 3, 3, 3.0]]), np.array([[5, 5, 5, 9, 9, 9.0]])],
        fp_rates=(0.25, 0.5, 8.0),
    )
    np.testing.assert_allclose(sens, [0.0, 0.5, 0.5])
    m = DetectionCPM(fp_rates=(1.0,))
    m.update([_out([[0, 0, 4, 4]], [0.5], [[1, 1, 3, 3]])])
    assert m.compute() == 1.0


def _detector():
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=(1, 2), base_anchor_shapes=((4, 4), (6, 6)), indexing="ij"
    )
    net = build_retinanet(
        2,
        1,
        1,
        2,
        returned_layers=(1,),
        conv1_t_stride=(2, 2),
        block="basic",
        layers=(1, 1, 1, 1),
        block_inplanes=(4, 8, 16, 32),
    )
    return net, build_retinanet_detector(net, anchors, batch_size_per_image=16, detections_per_img=10)


def test_train_and_eval_steps_drive_monai_engines():
    torch.manual_seed(0)
    net, det = _detector()
    img = torch.zeros(1, 16, 16)
    img[:, 4:10, 6:12] = 1.0
    sample = {"image": img, "box": torch.tensor([[4.0, 6.0, 10.0, 12.0]]), "label": torch.tensor([0])}
    empty = {"image": torch.zeros(1, 16, 16), "box": torch.zeros(0, 4), "label": torch.zeros(0)}
    batches = [[sample, [empty]]] * 8  # nested lists (num_samples crops) are flattened
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=None,
        iteration_update=DetectionTrainStep(det),
        decollate=False,
    )
    losses = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"]))
    )
    trainer.run()
    assert len(losses) == 8 and np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses

    evaluator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=[[sample, empty]],
        network=net,
        iteration_update=DetectionEvalStep(det),
        key_val_metric={"map50": DetectionMAP(["nucleus"])},
        decollate=False,
    )
    evaluator.run()
    out = evaluator.state.output
    assert len(out) == 2 and {"pred_box", "pred_label", "pred_score", "gt_box", "gt_label"} <= set(out[0])
    assert out[0]["pred_box"].shape[1] == 4 and 0.0 <= evaluator.state.metrics["map50"] <= 1.0


def test_writer_pixel_boxes_and_overlay_on_a_non_square_patch(tmp_path):
    image = MetaTensor(torch.zeros(3, 20, 30), meta={"filename_or_obj": "/x/patch_7.png"})
    pred = {
        "pred_box": torch.tensor([[2.0, 3.0, 10.0, 25.0]]),
        "pred_label": torch.tensor([0]),
        "pred_score": torch.tensor([0.9]),
    }
    rec = json.load(open(DetectionJSONWriter(tmp_path, class_names=["nucleus"]).write(image, pred)))
    assert rec["boxes"] == [[2.0, 3.0, 10.0, 25.0]] and rec["boxes_coco"] == [[3.0, 2.0, 22.0, 8.0]]
    assert rec["class_name"] == ["nucleus"] and rec["image"] == "patch_7.png"
    pic = np.asarray(Image.open(tmp_path / "patch_7_overlay.png"))
    assert pic.shape == (20, 30, 3)
    assert pic[2, 10].tolist() == [255, 255, 0] and pic[5, 10].tolist() == [0, 0, 0]  # top edge row 2


def test_writer_world_boxes_round_trip_to_the_original_grid(tmp_path):
    from monai_ext.data.synthetic.ct_lung_nodules import world_box_to_voxel

    affine = torch.tensor([[2.5, 0, 0, -100.0], [0, 2.5, 0, -90.0], [0, 0, 5.0, -40.0], [0, 0, 0, 1]])
    image = MetaTensor(torch.zeros(1, 40, 40, 16), affine=affine, meta={"filename_or_obj": "case_1.nii.gz"})
    image.meta["original_affine"] = affine.numpy()
    box = torch.tensor([[10.0, 12.0, 3.0, 14.0, 18.0, 7.0]])  # continuous voxel coordinates (centres at ints)
    pred = {"pred_box": box, "pred_label": torch.tensor([0]), "pred_score": torch.tensor([0.8])}
    rec = json.load(open(DetectionJSONWriter(tmp_path, coordinates="world").write(image, pred)))
    (world,) = rec["box"]
    # centre in RAS = affine @ (12, 15, 5) = (-70, -52.5, -15); LPS flips x and y; sizes in mm
    assert world == pytest.approx([70.0, 52.5, -15.0, 10.0, 15.0, 20.0])
    assert rec["box_voxel"] == [world_box_to_voxel(world, affine.numpy())] == [[10, 12, 3, 15, 19, 8]]
    assert (tmp_path / "case_1_overlay.png").is_file()
