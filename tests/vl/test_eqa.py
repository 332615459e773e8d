"""The EQA answerer: its data is deterministic, it learns from a few episodes, it saves and loads, and a damaged
folder or bad settings fail naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlagym.core.io import DatasetError
from vlagym.vl.eqa import (
    ANSWERS,
    Answerer,
    AnswererConfig,
    EQADataConfig,
    EQATrainConfig,
    load_eqa_data,
    make_eqa_data,
    train_answerer,
)


@pytest.fixture(scope="module")
def eqa_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("eqa") / "train"
    make_eqa_data(EQADataConfig(out=str(out), episodes=12, image_size=32, frames=2))
    return out


def test_data_holds_each_episodes_last_frames_question_and_answer(eqa_data, tmp_path):
    data = load_eqa_data(eqa_data)
    n = len(data["seed"])
    assert n >= 11 and data["frames"].shape == (n, 2, 32, 32, 3) and data["frames"].dtype == np.uint8
    assert all(ANSWERS[a] in (*ANSWERS,) for a in data["answer"])
    for q, a, fam in zip(data["question"], data["answer"], data["family"]):
        assert (ANSWERS.index(ANSWERS[a]) < 7) == (fam == "color"), (q, ANSWERS[a])
    again = tmp_path / "again"
    make_eqa_data(EQADataConfig(out=str(again), episodes=3, image_size=32, frames=2))
    other = load_eqa_data(again)
    np.testing.assert_array_equal(other["frames"], data["frames"][:3])  # same seeds, same data
    assert list(other["question"]) == list(data["question"][:3])


def test_tiny_train_beats_chance_on_its_data_and_round_trips(eqa_data, tmp_path):
    r = train_answerer(EQATrainConfig(data=str(eqa_data), out=str(tmp_path / "a"), eval_data=str(eqa_data),
                                      steps=120, batch_size=12, width=8, dim=16))
    assert r["train"]["n"] == r["eval"]["n"] and r["eval"]["accuracy"] >= 0.5  # chance is under 0.2
    model = Answerer.load(tmp_path / "a")
    data = load_eqa_data(eqa_data)
    got = model.answer(list(data["frames"][:4]), [str(q) for q in data["question"][:4]])
    assert all(a in ANSWERS for a in got)
    assert model.answer(list(data["frames"][0]), str(data["question"][0])) == got[0]
    meta = json.loads((tmp_path / "a" / "answerer.json").read_text())
    assert meta["result"]["eval"]["accuracy"] == r["eval"]["accuracy"]


def test_blind_answerer_ignores_the_frames(eqa_data, tmp_path):
    train_answerer(EQATrainConfig(data=str(eqa_data), out=str(tmp_path / "b"), steps=5, batch_size=4, width=4,
                                  dim=8, blind=True))
    model = Answerer.load(tmp_path / "b")
    q = "what colour is the box in the room with the red door"
    black, white = np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)
    assert model.config.blind and model.answer([black], q) == model.answer([white, white], q)


def test_damaged_answerer_folders_are_named(eqa_data, tmp_path):
    with pytest.raises(ValueError, match="no answerer folder at"):
        Answerer.load(tmp_path / "nowhere")
    d = tmp_path / "a"
    Answerer(AnswererConfig(vocab=["red"], image_size=32, width=4, dim=8)).save(d)
    (d / "answerer.safetensors").write_bytes(b"not weights")
    with pytest.raises(ValueError, match=r"answerer\.safetensors: corrupt answerer weights"):
        Answerer.load(d)
    (d / "answerer.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"answerer\.json: corrupt answerer config"):
        Answerer.load(d)
    (d / "answerer.json").unlink()
    with pytest.raises(ValueError, match="answerer.json is missing"):
        Answerer.load(d)
    with pytest.raises(DatasetError, match="no eqa.npz"):
        load_eqa_data(tmp_path)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="not all in the train split"):
        EQADataConfig(out="x", episodes=5, seed_start=999_998)
    with pytest.raises(ValueError, match="split must be one of"):
        EQADataConfig(out="x", split="holdout")
    with pytest.raises(ValueError, match="unknown answers"):
        AnswererConfig(answers=["red", "seven"])
    with pytest.raises(ValueError, match="lr must be > 0"):
        EQATrainConfig(data="d", out="o", lr=0.0)
