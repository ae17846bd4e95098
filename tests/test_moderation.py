"""The moderation specialist computes with numpy what the published scikit-learn pickles compute, reads only its
exported arrays when serving (no pickle, no scikit-learn import), and exports them again when the file is damaged."""
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from models.catalogue import load_catalogue
from models.fetch import verified_bytes, verified_path
from models.moderation import ModerationModel, exported_path

ENTRY = load_catalogue().moderation
TEXTS = ["have a nice day", "You are a stupid idiot", "WHAT THE HELL is this shit?!", "", "   ", "a b c",
         "Ünïcödé naïve café — 東京 🙂", "damn damn damn damn", "x" * 5000, "kill -9 the process, it's hung",
         "What is the capital of France?", "f*** you", "screw this, I hate it", "Write a Python function sum(a, b)"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A private copy of the pinned pickles, so the tests export into their own folder."""
    folder = tmp_path_factory.mktemp("weights")
    for weight in ENTRY.weights:
        shutil.copy(verified_path(weight), folder / weight.file)
    return folder


def sklearn_probabilities(texts: list[str]) -> np.ndarray:
    import joblib

    model, vectorizer = (joblib.load(io.BytesIO(verified_bytes(w))) for w in ENTRY.weights)
    return model.predict_proba(vectorizer.transform(texts))[:, 1]


def test_numpy_probabilities_equal_scikit_learns(weights):
    prompts = [json.loads(line)["prompt"] for line in open("data/labels/prompts.jsonl")][:300]
    texts = TEXTS + prompts
    ours = ModerationModel(ENTRY, weights).probabilities(texts)
    np.testing.assert_allclose(ours, sklearn_probabilities(texts), rtol=0, atol=1e-12)
    assert ours[1] > 0.5 > ours[0]  # the insult is flagged, the greeting not


def test_the_export_is_plain_arrays_and_a_damaged_one_is_exported_again(weights):
    ModerationModel(ENTRY, weights)
    path = exported_path(ENTRY, weights)
    with np.load(path, allow_pickle=False) as data:  # no object arrays: loading it runs no code
        assert {k: data[k].dtype.kind for k in data.files}["terms"] == "U"
    path.write_bytes(b"not an npz")
    assert ModerationModel(ENTRY, weights).probabilities(["you idiot"])[0] > 0.5
    with np.load(path, allow_pickle=False) as data:
        assert len(data["terms"]) == data["coef"].shape[1]


def test_the_ingress_specialist_does_not_import_scikit_learn():
    ModerationModel(ENTRY)  # the export exists, as `router fetch-models` leaves it
    code = ("import sys; from router.serving.specialists import ModerationSpecialist; "
            "p = ModerationSpecialist().probabilities(['you idiot'])[0]; "
            "print(p > 0.5, sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'joblib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True []"
