"""Helpers for bundle tests: run configs through MONAI's ConfigWorkflow and record losses."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigWorkflow

from monai_ext.bundle import SCHEMAS

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
__all__ = ["REPO", "BUNDLES", "SCHEMAS", "configs", "workflow", "record_losses"]


def configs(bundle: str, *names: str) -> list[str]:
    """Config file paths of ``bundle`` (``names`` without the .json suffix)."""
    return [str(BUNDLES / bundle / "configs" / f"{n}.json") for n in names]


def workflow(bundle: str, names: list[str], workflow_type: str = "train", **overrides) -> ConfigWorkflow:
    """An initialised ConfigWorkflow over ``names`` with ``overrides``."""
    wf = ConfigWorkflow(
        config_file=configs(bundle, *names),
        meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
        logging_file=str(BUNDLES / bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )
    wf.initialize()
    return wf


def record_losses(trainer) -> list[float]:
    """Attach a recorder of the per-iteration training loss; return the list it fills."""
    from ignite.engine import Events

    losses: list[float] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        out = engine.state.output
        out = out[0] if isinstance(out, list) else out
        losses.append(float(out["loss"]))

    return losses


def evaluate_metrics(bundle: str, dataset_dir: str, root, **overrides) -> dict[str, float]:
    """Run ``train`` + ``evaluate`` of ``bundle`` with outputs under ``root``; return ``eval/metrics.csv``."""
    import csv
    from pathlib import Path

    root = Path(root)
    wf = workflow(
        bundle,
        ["train", "evaluate"],
        "eval",
        bundle_root=str(root),
        dataset_dir=dataset_dir,
        output_dir=str(root / "eval"),
        **overrides,
    )
    wf.run()
    wf.finalize()
    with open(root / "eval" / "metrics.csv") as f:
        return {k: float(v) for k, v in csv.reader(f)}
