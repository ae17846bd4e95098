"""Why the adversarially trained router's "down" flips read 4.8% in stop 22's run and 22-27% now: that run kept
the gadget copies among the out-of-distribution keys. A copy sits next to its prompt, so the leave-one-out
distances shrink and the 0.97-quantile threshold with them, and the detector then sends new gadget prompts (and
more clean ones) to the fallback. `router train` keeps the clean prompts as the keys. Prints both thresholds.

Run after bench/prefix_augmentation.py, whose gadget cache ($TMPDIR/prefix_augmentation/4-3-64.json) it reads:

    .venv/bin/python bench/prefix_augmentation_ood.py    # about a minute
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.catalogue import load_catalogue  # noqa: E402
from router.classifier import OOD_QUANTILE, nearest_distance  # noqa: E402
from router.families.neighbours import KEY_DIGITS  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.hardening import augment  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.train import table_features  # noqa: E402


def threshold(features: np.ndarray) -> tuple[int, float]:
    keys = np.unique(np.round(features[:, :-1], KEY_DIGITS).astype(np.float32), axis=0)
    return len(keys), float(np.quantile(nearest_distance(keys, keys, leave_one_out=True), OOD_QUANTILE))


def main() -> int:
    cache = Path(tempfile.gettempdir()) / "prefix_augmentation" / "4-3-64.json"
    if not cache.exists():
        print(f"{cache} is missing: run bench/prefix_augmentation.py first", file=sys.stderr)
        return 2
    catalogue, encoder = load_catalogue(), Encoder(threads=2)
    table = load_outcomes(ROOT / "data" / "outcomes" / "default.csv", catalogue.names())
    features, _ = table_features(table, encoder)
    gadgets = [g for r in json.loads(cache.read_text())["rounds"] for g in r]
    aug = augment(table, features, np.arange(len(table)), encoder, 4, gadgets, 0)
    for name, x in (("clean prompts (router train)", features), ("with the copies (stop 22's run)", aug.features)):
        keys, value = threshold(x)
        print(f"{name}: {keys} keys, threshold {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
