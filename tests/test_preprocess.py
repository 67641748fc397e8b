"""``onnxdeconv preprocess``: rank the presets, write a copy that declares the choice."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import DIGIT_7, DIGITNET, ROOT
from helpers import conv_relu_pool_model, run
from onnx import helper

from onnxdeconv import load_model, prepare
from onnxdeconv.analysis.preprocess import DECLARED, PreprocessingReport, rank_preprocessing
from onnxdeconv.cli.model import ModelOptions
from onnxdeconv.errors import InputError, ModelLoadError
from onnxdeconv.inputs import PRESETS, Preprocessing, load_input, preprocessing_from_metadata
from onnxdeconv.outputs.model import write_model_metadata
from onnxdeconv.outputs.preprocess import preprocess_table
from onnxdeconv.runtime import ForwardRunner

DIGITS = sorted((ROOT / "models" / "examples").glob("digit_*.png"))


def _small_model(tmp_path: Path, classes: bool = True) -> Path:
    """A 3-channel model without metadata; without its classifier head when ``classes`` is off."""
    model = conv_relu_pool_model(channels=3, size=16)
    if not classes:
        kept = [node for node in model.graph.node if node.op_type not in ("Flatten", "Gemm")]
        del model.graph.node[:]
        model.graph.node.extend(kept)
        del model.graph.output[:]
        pool = helper.make_tensor_value_info("pool", onnx.TensorProto.FLOAT, ["N", 4, 8, 8])
        model.graph.output.append(pool)
        fc = [t for t in model.graph.initializer if t.name == "fc"]
        model.graph.initializer.remove(fc[0])
    path = tmp_path / ("small.onnx" if classes else "no_classes.onnx")
    onnx.save(model, str(path))
    return path


# --- the library ---------------------------------------------------------------------------


def test_rank_preprocessing_matches_a_plain_forward_pass() -> None:
    prepared = prepare(load_model(DIGITNET))
    candidates = {"raw": PRESETS["raw"], "tf": PRESETS["tf"]}
    report = rank_preprocessing(prepared, DIGITS, candidates=candidates, top=3)
    assert report.candidates == ["raw", "tf"]
    assert report.probabilities.shape == (2, len(DIGITS), 10)
    assert report.top_classes.shape == (2, len(DIGITS), 3)
    # Independently: the logits of one image under tf, through the runner, softmaxed here.
    image = load_input(DIGITS[0], prepared.loaded, PRESETS["tf"]).array
    logits = ForwardRunner(prepared).run(image)["logits"][0].astype(np.float64)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(report.probabilities[1, 0], expected, rtol=1e-5, atol=1e-9)
    assert report.top_classes[1, 0, 0] == int(np.argmax(logits))
    assert report.softmax_applied
    # Certainty: mean over the images of 1 - entropy / log(classes), written out another way.
    p = report.probabilities
    entropy = np.array([[-sum(x * np.log(x) for x in row if x > 0) for row in c] for c in p])
    np.testing.assert_allclose(report.certainty, (1 - entropy / np.log(10)).mean(axis=1))
    assert report.recommended == report.candidates[int(np.argmax(report.certainty))]


def test_report_json_and_table() -> None:
    p = np.zeros((2, 1, 4))
    p[0, 0] = [0.25, 0.25, 0.25, 0.25]
    p[1, 0] = [0.05, 0.9, 0.05, 0.0]
    report = PreprocessingReport(
        ["imagenet", "caffe"], [PRESETS["imagenet"], PRESETS["caffe"]], ["a/x.png"], p, True, top=2
    )
    np.testing.assert_allclose(report.certainty, [0.0, 1 - 0.394398 / np.log(4)], atol=1e-6)
    assert report.recommended == "caffe" and report.close == []
    data = report.to_json(["zero", "one", "two", "three"])
    assert data["recommended"] == "caffe"
    caffe = data["candidates"][1]
    assert caffe["preprocessing"] == {
        "scale": 1.0,
        "mean": [104.0, 117.0, 123.0],
        "std": [1.0, 1.0, 1.0],
        "bgr": True,
    }
    assert caffe["images"][0]["top"][0] == {"class": 1, "name": "one", "probability": 0.9}
    assert caffe["mean_top1"] == pytest.approx(0.9)
    table = preprocess_table(report, ["zero", "one", "two", "three"])
    assert table[0].startswith("caffe: certainty") and "<- recommended" in table[0]
    assert table[1].split() == ["x.png", "one", "0.900,", "zero", "0.050"]
    assert table[-1].startswith("recommended: caffe")


def test_declared_wins_a_close_call_and_close_ones_are_named() -> None:
    p = np.full((3, 1, 2), 0.5)
    p[:2, 0] = [1.0, 0.0]
    p[2, 0] = [0.9995, 0.0005]  # certainty 0.994: within 0.01
    candidates = ["raw", "imagenet", DECLARED]
    report = PreprocessingReport(candidates, [PRESETS["raw"]] * 3, ["x.png"], p, False)
    assert report.recommended == DECLARED
    assert report.close == ["raw", "imagenet"]
    assert any(line.startswith("caution: raw, imagenet") for line in preprocess_table(report))


def test_a_model_without_class_scores_has_nothing_to_rank(tmp_path: Path) -> None:
    prepared = prepare(load_model(_small_model(tmp_path, classes=False)))
    with pytest.raises(InputError, match="nothing to rank"):
        rank_preprocessing(prepared, [DIGIT_7])


def test_write_model_metadata_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "copy.onnx"
    write_model_metadata(DIGITNET, out, PRESETS["caffe"], ["a", "b"])
    loaded = load_model(out)
    assert preprocessing_from_metadata(loaded) == PRESETS["caffe"]
    assert loaded.labels == ["a", "b"]
    assert loaded.metadata["onnxdeconv.epoch"] == load_model(DIGITNET).metadata["onnxdeconv.epoch"]
    assert [n.op_type for n in loaded.model.graph.node] == [
        n.op_type for n in load_model(DIGITNET).model.graph.node
    ]
    # Written twice: the entries are replaced, not repeated.
    write_model_metadata(out, tmp_path / "again.onnx", Preprocessing(0.5, (1.0,), (2.0,)))
    again = onnx.load(str(tmp_path / "again.onnx"))
    keys = [p.key for p in again.metadata_props]
    assert keys.count("onnxdeconv.preprocess") == 1 and keys.count("onnxdeconv.labels") == 1
    assert preprocessing_from_metadata(load_model(again)) == Preprocessing(0.5, (1.0,), (2.0,))


def test_write_model_metadata_refuses_the_model_itself_and_external_data(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copy(DIGITNET, model)
    with pytest.raises(InputError, match="the model itself"):
        write_model_metadata(model, tmp_path / "." / "m.onnx", PRESETS["raw"])
    external = tmp_path / "external.onnx"
    proto = onnx.load(str(DIGITNET))
    onnx.save(proto, str(external), save_as_external_data=True, size_threshold=0)
    with pytest.raises(ModelLoadError, match="external data"):
        write_model_metadata(external, tmp_path / "copy.onnx", PRESETS["raw"])
    assert not (tmp_path / "copy.onnx").exists()


def test_an_assumed_preset_is_said_with_how_to_check(tmp_path: Path) -> None:
    loaded = load_model(_small_model(tmp_path))
    _, how = ModelOptions().preprocessing(loaded)
    assert how.startswith("assumed preset imagenet (the model declares none; check with ")
    assert f"'onnxdeconv preprocess {loaded.path} IMAGE'" in how
    assert ModelOptions(preset="imagenet").preprocessing(loaded)[1].startswith("preset imagenet")
    # DigitNet declares its own; a gray model is not told to check.
    assert "assumed" not in ModelOptions().preprocessing(load_model(DIGITNET))[1]


# --- the command ---------------------------------------------------------------------------


def test_cli_table_json_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["preprocess", DIGITNET, *DIGITS], capsys)
    assert code == 0, err
    assert "running on" in err
    assert re.search(r"^recommended: \w+", out, re.MULTILINE)
    assert out.count("certainty") == len(PRESETS) + 1  # and the declared one
    code, out, err = run(["preprocess", DIGITNET, DIGIT_7, "--json"], capsys)
    data = json.loads(out)
    assert {c["name"] for c in data["candidates"]} == {*PRESETS, DECLARED}
    assert data["recommended"] in {c["name"] for c in data["candidates"]}
    copy = tmp_path / "raw.onnx"
    args = ["preprocess", DIGITNET, DIGIT_7, "--preset", "raw", "--write", "-o", copy]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == str(copy)
    assert "preprocessing raw (given) and 10 class names" in err
    assert preprocessing_from_metadata(load_model(copy)) == PRESETS["raw"]


def test_cli_custom_values_are_a_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["preprocess", DIGITNET, DIGIT_7, "--mean", "0.5", "--scale", "0.0039", "--json"]
    code, out, err = run(args, capsys)
    assert code == 0, err
    custom = [c for c in json.loads(out)["candidates"] if c["name"] == "custom"]
    assert custom[0]["preprocessing"] == {
        "scale": 0.0039,
        "mean": [0.5],
        "std": [1.0],
        "bgr": False,
    }


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--write"], "--write needs -o"),
        (["-o", "x.onnx"], "--write needs -o"),
        (["--write", "-o", str(DIGITNET)], "is the input MODEL: writing it would destroy it"),
        (["--preset", "caffe", "--bgr"], "either --preset or"),
    ],
)
def test_cli_refuses(
    extra: list[str], pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["preprocess", DIGITNET, DIGIT_7, *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), err


def test_cli_without_class_scores_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["preprocess", _small_model(tmp_path, classes=False), DIGIT_7], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "nothing to rank" in lines[0], err


def test_preset_help_explains_each_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["occlusion", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    for line in (
        "imagenet: RGB /255, minus the mean and over the std of ImageNet",
        "caffe: BGR 0-255 minus the means 104,117,123",
        "tf: RGB scaled to [-1,1]",
        "raw: pixels 0-255 as they are",
    ):
        assert line in text


def test_commands_say_the_assumed_preset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _small_model(tmp_path)
    code, _, err = run(["project", model, DIGIT_7, "-o", tmp_path / "p.png"], capsys)
    assert code == 0, err
    said = [line for line in err.splitlines() if line.startswith("preprocessing:")]
    assert len(said) == 1
    assert said[0].startswith(
        f"preprocessing: assumed preset imagenet (the model declares none; check with "
        f"'onnxdeconv preprocess {model} IMAGE')"
    )


# --- your own model in three steps, on the real Caffe SqueezeNet ----------------------------


def test_your_own_model_in_three_steps(
    squeezenet_path: Path, images_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = squeezenet_path.parent / "Labels.txt"
    dogs = images_dir / "dogs.jpg"
    # Before: the model declares nothing, so commands assume imagenet and say so.
    code, out, err = run(["occlusion", squeezenet_path, dogs, "-o", tmp_path / "o.png"], capsys)
    assert code == 0, err
    assert "preprocessing: assumed preset imagenet" in err
    # 1. preprocess recommends caffe and writes a copy that declares it and the labels.
    mine = tmp_path / "mine.onnx"
    photos = [dogs, images_dir / "burger.jpg", images_dir / "cat.jpg"]
    args = ["preprocess", squeezenet_path, *photos, "--labels", labels, "--write", "-o", mine]
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert out.splitlines()[-2].startswith("recommended: caffe")
    assert "preprocessing caffe (recommended) and 1000 class names" in err
    # 2. layers
    code, out, err = run(["layers", mine], capsys)
    assert code == 0, err
    assert "relu26" in out or "conv10" in out
    # 3. report on two photos, with the written preprocessing.
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in photos[:2]:
        shutil.copy(photo, folder)
    code, out, err = run(["report", mine, "--images", folder, "-o", tmp_path / "report"], capsys)
    assert code == 0, err
    assert "preprocessing: from the model's metadata: BGR, x*1, mean [104.0, 117.0, 123.0]" in err
    # Every later command: occlusion names the right class with no option at all.
    code, out, err = run(["occlusion", mine, dogs, "-o", tmp_path / "o2.png"], capsys)
    assert code == 0, err
    assert "(Tibetan terrier): p = 0.92" in out
