"""NS-VQA: programs in prefix order and back, the scene parser's targets and decoding, a tiny train-and-eval run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlagym.experiments.cli import main
from vlagym.vl import nsvqa as ns
from vlagym.vl.captions import ObjectView
from vlagym.vl.questions import COLORS, SHAPES, QuestionError, execute
from vlagym.vl.vqa_data import VQADataConfig, load_vqa_data, make_vqa_data

ENVS = ["vlagym/TabletopPlace-v0", "vlagym/TabletopTouch-v0"]


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsvqa") / "d"
    make_vqa_data(VQADataConfig(out=str(root), images=12, env=ENVS, image_size=32, per_family=2))
    return root


def test_prefix_programs_round_trip_and_broken_ones_are_refused(vqa_dir):
    data = load_vqa_data(vqa_dir)
    sig = ns.program_signature(data.questions)
    assert sig["scene"] == (0, 0) and sig["filter_color"] == (1, 1)
    for q in data.questions:
        back = ns.from_prefix(ns.to_prefix(q["program"]), sig)
        assert ns.to_prefix(back) == ns.to_prefix(q["program"])
        objects = [ObjectView(**o) for o in data.meta[q["image_index"]]["objects"]]
        assert execute(back, objects, q["camera"]) == q["answer"]
    toks = ns.to_prefix(data.questions[0]["program"])
    with pytest.raises(QuestionError, match="middle of a program"):
        ns.from_prefix(toks[:-1], sig)
    with pytest.raises(QuestionError, match="goes on after"):
        ns.from_prefix(toks + ["scene"], sig)
    with pytest.raises(QuestionError, match="where a function belongs"):
        ns.from_prefix(["red"] + toks, sig)


def test_scene_targets_put_a_peak_on_each_object_in_its_group_and_ignore_faint_ones():
    mask = np.full((32, 32), -1, np.int8)
    mask[10:14, 20:24] = 2  # a green bowl ...
    mask[11:13, 21:23] = 0  # ... with a red cube inside, drawn over the bowl's middle
    mask[2, 2] = 1  # one pixel of a faint object
    meta = {"objects": [
        {"index": 0, "color": "red", "shape": "cube", "size": "large", "x": 0.15, "depth": 0.9, "pixels": 4,
         "box": [21, 11, 22, 12], "visible": True, "in_bowl": 2},
        {"index": 1, "color": "blue", "shape": "bowl", "size": "large", "x": -0.2, "depth": 1.0, "pixels": 1,
         "box": [2, 2, 2, 2], "visible": False, "in_bowl": None},
        {"index": 2, "color": "green", "shape": "bowl", "size": "large", "x": 0.15, "depth": 0.9, "pixels": 12,
         "box": [20, 10, 23, 13], "visible": True, "in_bowl": None}]}
    t = ns.scene_targets(meta, mask)
    obj, bowl = ns.GROUPS.index("object"), ns.GROUPS.index("bowl")
    assert t["heat"].shape == (2, 16, 16) and t["cls"].shape == (2, 4, 16, 16)
    # The cube and its bowl share a centre cell, each in its own group's heatmap.
    assert np.argwhere(t["heat"][obj] == 1.0).tolist() == [[6, 11]]
    assert np.argwhere(t["heat"][bowl] == 1.0).tolist() == [[6, 11]]
    assert t["heat_weight"][bowl, 1, 1] == 0 and t["heat_weight"][obj, 1, 1] == 1  # no penalty near the faint bowl
    cube_cells = t["cls"][obj, 0] >= 0
    assert (t["cls"][obj, 0][cube_cells] == COLORS.index("red")).all()
    assert (t["cls"][obj, 1][cube_cells] == SHAPES.index("cube")).all()
    assert (t["cls"][obj, 3][cube_cells] == 1).all()  # in a bowl
    bowl_cells = t["cls"][bowl, 0] >= 0
    assert bowl_cells[6, 11] and (t["cls"][bowl, 0][bowl_cells] == COLORS.index("green")).all()
    assert (t["cls"][bowl, 3][bowl_cells] == -1).all()  # a bowl is never in a bowl
    assert np.allclose(t["pos"][obj, 0][cube_cells], 0.15 / ns.X_SCALE)


def test_parse_reads_peaks_per_group_and_puts_objects_in_the_nearest_bowl(monkeypatch):
    parser = ns.SceneParser(8)
    h = w = 8
    maps = {k: torch.full((1, len(ns.GROUPS), c, h, w), -9.0) for k, c in ns.HEADS.items()}

    def put(i, j, color, shape, x, depth, in_bowl):
        g = ns.group_of(shape)
        maps["heat"][0, g, 0, i, j] = 5.0
        maps["color"][0, g, COLORS.index(color), i, j] = 9.0
        maps["shape"][0, g, SHAPES.index(shape), i, j] = 9.0
        maps["size"][0, g, 0, i, j] = 9.0
        maps["in_bowl"][0, g, 0, i, j] = 9.0 if in_bowl else -9.0
        maps["pos"][0, g, :, i, j] = torch.tensor([x / ns.X_SCALE, (depth - ns.DEPTH_MID) / ns.DEPTH_SCALE])

    put(6, 1, "red", "cube", -0.2, 0.86, True)  # inside the blue bowl: the same cell
    put(1, 6, "green", "bowl", 0.2, 0.9, False)
    put(6, 1, "blue", "bowl", -0.2, 0.86, False)
    put(6, 6, "pink", "cylinder", 0.1, 0.95, False)
    monkeypatch.setattr(parser, "forward", lambda images: maps)
    (objs,) = parser.parse(np.zeros((1, 16, 16, 3), np.uint8), threshold=0.5)
    by = {o.color: o for o in objs}
    assert sorted(by) == ["blue", "green", "pink", "red"]
    assert by["red"].in_bowl == by["blue"].index and by["pink"].in_bowl is None
    assert by["red"].x == pytest.approx(-0.2) and by["pink"].depth == pytest.approx(0.95)
    prog = [{"function": "scene", "inputs": [], "value_inputs": []},
            {"function": "filter_color", "inputs": [0], "value_inputs": ["blue"]},
            {"function": "unique", "inputs": [1], "value_inputs": []},
            {"function": "contents", "inputs": [2], "value_inputs": []},
            {"function": "name", "inputs": [3], "value_inputs": []}]
    assert ns._execute(objs, prog, "rgb") == "red cube"
    assert ns._execute(objs, "did not parse", "rgb") == "<no program>"


def test_tiny_train_and_eval_end_to_end(vqa_dir, tmp_path, capsys):
    cfg = ns.NSVQAConfig(data=str(vqa_dir), eval_data=str(vqa_dir), out=str(tmp_path / "run"), scene_steps=60,
                         program_steps=300, batch_size=8, width=16, program_width=64, lr=3e-3,
                         checkpoint_every=20, threads=1, device="cpu")
    m = ns.train_nsvqa(cfg)
    hist = m["scene_history"]
    assert hist[-1]["total"] < hist[0]["total"]  # the scene parser learns on its own images
    assert m["program_parser"]["history"][-1]["batch_exact"] > 0.9  # template questions are easy to parse
    final = m["final"]
    assert final["parts"]["program_exact_match"] > 0.9
    assert 0 <= final["model"]["accuracy"] <= 1 and "gap_points" in final
    again = ns.eval_nsvqa(tmp_path / "run", vqa_dir, "cpu")
    assert again["model"] == final["model"]  # the saved model answers as the trained one did
    assert main(["vqa-eval", "--model", str(tmp_path / "run"), "--data", str(vqa_dir),
                 "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "overall" in out and "program parser: exact match" in out
    assert json.loads((tmp_path / "r.json").read_text())["model"] == final["model"]
    # vqa-plot draws a run folder and a vqa-eval report side by side.
    png = tmp_path / "families.png"
    assert main(["vqa-plot", str(tmp_path / "run"), str(tmp_path / "r.json"), "--labels", "run", "report",
                 "--out", str(png)]) == 0
    from PIL import Image

    assert Image.open(png).size[0] > 500
    assert main(["vqa-plot", str(tmp_path / "run"), "--labels", "a", "b", "--out", str(png)]) == 2
    assert "2 labels for 1 reports" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no such report"):
        from vlagym.vl.vqa import read_report

        read_report(tmp_path / "nothing")
    # A finished run resumes to the same numbers without training again; other settings are refused.
    assert ns.train_nsvqa(cfg)["final"]["model"] == final["model"]
    with pytest.raises(ValueError, match="different settings"):
        ns.train_nsvqa(ns.NSVQAConfig(**{**cfg.__dict__, "lr": 1e-3}))


def test_bad_settings_and_folders_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="needs data="):
        ns.NSVQAConfig()
    with pytest.raises(ValueError, match="threshold"):
        ns.NSVQAConfig(data="d", threshold=1.5)
    with pytest.raises(FileNotFoundError, match="nsvqa-train run folder"):
        ns.NSVQA.load(tmp_path)
