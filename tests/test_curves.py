"""Training curves: the files dvclive writes, byte for byte, without importing dvclive."""

from __future__ import annotations

from pathlib import Path

from m3sa.training.curves import Curves

HISTORY = [
    {"epoch": 1, "train": {"loss": 0.5, "loss_multimodal": 0.25}, "valid": {"mae": 1.25, "corr": 0.1},
     "filter": {"language": 0.9, "visual": 0.125}},
    {"epoch": 2, "train": {"loss": 0.375, "loss_multimodal": 0.2}, "valid": {"mae": 0.625, "corr": 0.3},
     "filter": {"language": 0.875, "visual": 0.0625}},
]


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_curves_match_dvclive_files(tmp_path):
    from dvclive import Live

    live = Live(dir=str(tmp_path / "dvclive" / "seed_0"), resume=False, dvcyaml=False, save_dvc_exp=False,
                report=None)
    for h in HISTORY:
        live.step = h["epoch"] - 1
        for k, v in h["train"].items():
            live.log_metric(f"train/{k}", v)
        for k, v in h["valid"].items():
            live.log_metric(f"valid/{k}", v)
        for m, v in h["filter"].items():
            live.log_metric(f"valid/filter_{m}", v)
        live.next_step()
    live.end()

    ours = Curves(tmp_path / "ours", 0, HISTORY[:1])  # the first epoch from a resumed history
    ours.log(2, HISTORY[1]["train"], HISTORY[1]["valid"], HISTORY[1]["filter"])
    ours.close()
    want, got = files(tmp_path / "dvclive" / "seed_0"), files(tmp_path / "ours" / "seed_0")
    assert got == want


def test_reopening_rewrites_the_folder_from_history(tmp_path):
    first = Curves(tmp_path, 0, HISTORY)
    (first.folder / "plots" / "metrics" / "valid" / "mae.tsv").write_text("step\tmae\n0\t1.2")  # cut short
    Curves(tmp_path, 0, HISTORY[:1])
    assert (tmp_path / "seed_0/plots/metrics/valid/mae.tsv").read_text() == "step\tmae\n0\t1.25\n"
