"""Captioner, instruction parser and the ITM/MLM objectives: tiny end-to-end runs and their bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vlagym.core.io import DatasetError
from vlagym.vl.captioner import (
    CaptionTrainConfig,
    Vocab,
    load_captioner,
    references,
    template_prior,
    train_captioner,
)
from vlagym.vl.data import VLData, VLDataConfig, load_vl_data, make_vl_data
from vlagym.vl.parser import (
    InstructionParser,
    ParseTrainConfig,
    TemplateParser,
    align_frame_of,
    alignment,
    ground_parse,
    in_context,
    load_pairs,
    run_parse_train,
    scene_shapes,
    task_slots,
    word_tags,
)
from vlagym.vl.train import VLTrainConfig, sample_batch, train_vl

MICRO = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lang") / "data"
    make_vl_data(VLDataConfig(env=["vlagym/TabletopPlace-v0", "vlagym/TabletopTouch-v0"], images=32, out=str(out),
                              image_size=32, cameras=("rgb",)))
    return out


@pytest.fixture(scope="module")
def vl_run(data_dir, tmp_path_factory):
    """A tiny vl-train run with all three objectives."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("lang") / "vl"
    cfg = VLTrainConfig(data=str(data_dir), out=str(out), model_cfg=MICRO, steps=20, batch_size=16, lr=2e-3,
                        warmup=2, checkpoint_every=10, itm=True, mlm=True)
    return out, train_vl(cfg)


def test_itm_and_mlm_train_beside_the_contrastive_loss(vl_run, data_dir):
    out, m = vl_run
    first, last = m["history"][0], m["history"][-1]
    for k in ("contrastive", "itm", "mlm", "itm_acc", "mlm_acc"):
        assert k in last and np.isfinite(last[k])
    assert last["mlm"] < first["mlm"]  # the masked words are learnable from the caption vocabulary
    assert (out / "model" / "open_clip_model.safetensors").exists()
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert "fusion" in ckpt and ckpt["settings"]["itm"] is True
    # Resuming a finished run is a no-op; its settings include the objectives.
    again = train_vl(VLTrainConfig(data=str(data_dir), out=str(out), model_cfg=MICRO, steps=20, batch_size=16,
                                   lr=2e-3, warmup=2, checkpoint_every=10, itm=True, mlm=True))
    assert again["history"] == m["history"]
    with pytest.raises(ValueError, match="different settings"):
        train_vl(VLTrainConfig(data=str(data_dir), out=str(out), model_cfg=MICRO, steps=20, batch_size=16,
                               lr=2e-3, warmup=2, checkpoint_every=10, itm=True, mlm=False))


def test_itm_negatives_are_false_of_their_images(data_dir):
    from vlagym.vl.captions import holds, is_false
    from vlagym.vl.fusion import hardest_false_images

    d = load_vl_data(data_dir)
    _, texts, negs, det = sample_batch(d, 3, 0, 16, True, details=True)
    assert len(negs) == len(det["owners"]) > 0
    assert sample_batch(d, 3, 0, 16, True)[1] == texts  # details do not change the draw
    assert all(holds(f, o) for f, o in zip(det["facts"], det["objects"]))
    for neg, row in zip(det["negative_facts"], det["owners"]):
        assert is_false(neg, det["objects"][row])
    # The mined image negative is the best-scoring image the caption is false of.
    facts, objects = det["facts"][:4], det["objects"][:4]
    sim = torch.tensor([[0.0, 0.9, 0.5, 0.1]] * 4)
    for i, j in enumerate(hardest_false_images(sim, facts, objects)):
        false_of = [k for k in range(4) if k != i and is_false(facts[i], objects[k])]
        assert j == (max(false_of, key=lambda k: float(sim[i, k])) if false_of else None)


def test_tiny_caption_train_and_eval_beats_the_template_prior(vl_run, data_dir, tmp_path):
    out, _ = vl_run
    run = tmp_path / "cap"
    r = train_captioner(CaptionTrainConfig(data=str(data_dir), eval_data=str(data_dir), out=str(run),
                                           vl_model=str(out), steps=250, batch_size=16, lr=3e-3, layers=1))
    ev = r["eval"]
    assert r["frozen_vision"] and r["history"][-1]["loss"] < r["history"][0]["loss"]
    assert ev["captioner"]["cider_d"] > ev["template_prior"]["cider_d"]
    assert ev["captioner"]["bleu4"] > ev["template_prior"]["bleu4"]
    assert "tok:13a" in ev["captioner"]["bleu_signature"]
    assert json.loads((run / "report.json").read_text())["eval"]["captioner"] == ev["captioner"]
    # The saved captioner reproduces its captions and captions an image from the CLI.
    d = load_vl_data(data_dir)
    c = load_captioner(run)
    assert c.caption(d.images[:2]) == [e["caption"] for e in ev["examples"][:2]]
    Image.fromarray(d.images[0]).save(tmp_path / "scene.png")
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "caption", "--model", str(run), "--image",
                          str(tmp_path / "scene.png")], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ev["examples"][0]["caption"]


def test_empty_caption_sets_are_refused(data_dir):
    d = load_vl_data(data_dir)
    empty = VLData(d.images[:1], d.masks[:1], [{**d.meta[0], "captions": [], "facts": []}])
    with pytest.raises(ValueError, match="caption set is empty"):
        references(empty)
    with pytest.raises(ValueError, match="caption set is empty"):
        template_prior(empty)
    with pytest.raises(ValueError, match="caption set is empty"):
        Vocab.build([])
    with pytest.raises(ValueError, match="targets must be one of"):
        CaptionTrainConfig(data="x", targets="every")


# --- the parser ---------------------------------------------------------------------------------------------------
def test_tags_come_from_the_tasks_words():
    slots = {"task": "relational_goal", "object": {"color": "red", "shape": "ball"}, "destination": {"door": "red"}}
    assert word_tags("head to the red sphere in the room whose door is red", slots) == \
        ["O", "O", "O", "object.color", "object.shape", "O", "O", "O", "O", "O", "O", "destination.door"]
    with pytest.raises(ValueError, match="cannot find the object words"):
        word_tags("touch the blue cube", {"task": "touch", "object": {"color": "red", "shape": "cube"}})


def test_task_slots_read_the_env_task():
    import gymnasium as gym

    env = gym.make("vlagym/TabletopPlace-v0", obs_mode="state", level="L1")
    obs, _ = env.reset(seed=2_000_000)
    task = env.unwrapped.task
    slots, ids = task_slots(task)
    env.close()
    assert slots["task"] == "place" and ids == {"object": 0, "destination": 1}
    assert slots["object"] == {"color": task.objects[0].color, "shape": task.objects[0].shape}
    assert slots["destination"]["shape"] == "bowl" and task.objects[0].color in obs["instruction"]


@pytest.fixture(scope="module")
def parse_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("lang") / "parser"
    cfg = ParseTrainConfig(out=str(out), env=["vlagym/TabletopPlace-v0", "vlagym/TabletopPush-v0"],
                           train_per_env=40, eval_per_level=10, epochs=150)
    return out, run_parse_train(cfg)


def test_parser_learns_slots_and_grounds_them(parse_run):
    out, r = parse_run
    assert r["train_fit"]["exact_match"] == 1.0
    for level in ("L1", "L2", "L3"):
        assert r["learned"][level]["exact_match"] >= 0.9, r["learned"]["errors_sample"]
        assert r["learned"][level]["grounded_id_acc"] >= 0.9
    # The rule baseline knows only the training templates: nothing at L4.
    assert r["template_rules"]["L1"]["exact_match"] == 1.0 and r["template_rules"]["L4"]["exact_match"] == 0.0
    p = InstructionParser.load(out)
    parse = p.parse(["put the green cylinder in the blue bowl"])[0]
    assert parse == {"task": "place", "object": {"color": "green", "shape": "cylinder"},
                     "destination": {"color": "blue", "shape": "bowl"}}
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "parse", "--model", str(out), "--text",
                          "push the red cube to the left side of the table"], capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr
    assert '"side": "left"' in res.stdout and '"task": "push"' in res.stdout
    # An env reset instead of text: its instruction parsed with and without its scene, beside the true slots.
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "parse", "--model", str(out), "--env",
                          "vlagym/TabletopPlace-v0", "--seed", "2000000", "--level", "L1"], capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line)
    truth = json.loads(lines["true slots"])
    assert truth["task"] == "place" and lines["instruction"].strip("'").count(truth["object"]["color"])
    assert lines["scene-grounded"].startswith(json.dumps(truth)) and lines["scene-grounded"].endswith("(right)")
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "parse", "--model", str(out)],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode != 0 and "give instructions (--text ...) or an env reset" in res.stderr


def test_scene_grounded_parse_picks_the_shape_the_scene_holds_in_that_colour(parse_run):
    out, r = parse_run
    p = InstructionParser.load(out)
    # The eval pairs carry their scenes, and the grounded parse of them is scored beside the text-only one.
    assert set(r["learned_scene"]) >= {"L1", "L4"} and r["learned_scene"]["L1"]["exact_match"] >= 0.9
    words = ["put", "the", "green", "thing", "in", "the", "blue", "bowl"]
    tags = ["O", "O", "object.color", "object.shape", "O", "O", "destination.color", "destination.shape"]
    scene = [{"color": "green", "shape": "cylinder"}, {"color": "green", "shape": "cube"},
             {"color": "blue", "shape": "bowl"}, {"color": "red", "shape": "ball"}]
    assert scene_shapes(scene, words, tags, "object") == ["cube", "cylinder"]  # canonical order
    assert scene_shapes(scene, words, tags, "destination") == ["bowl"]
    assert scene_shapes(None, words, tags, "object") == [] and scene_shapes(scene, words, ["O"] * 8, "object") == []
    # The shape word picks among the shapes the scene holds in its slot's colour: the nearest of them, and the
    # only one when there is one.
    text = "put the green cube in the blue bowl"
    plain = p.parse([text])[0]
    assert plain == {"task": "place", "object": {"color": "green", "shape": "cube"},
                     "destination": {"color": "blue", "shape": "bowl"}}
    for shapes, want in ((("cube", "cylinder"), "cube"), (("cylinder",), "cylinder")):
        scene = [{"color": "green", "shape": s} for s in shapes] + [{"color": "blue", "shape": "bowl"}]
        assert p.parse([text], [scene])[0] == {**plain, "object": {"color": "green", "shape": want}}
    # No scene: the text-only parse.
    assert p.parse([text], [None])[0] == plain
    with pytest.raises(ValueError, match="2 scenes for 1 instructions"):
        p.parse([text], [None, None])


def test_scaled_emissions_let_a_confident_colour_pull_the_next_word_into_its_slot(parse_run):
    out, r = parse_run
    p = InstructionParser.load(out)
    assert p.scaled_emissions and "learned_scaled_emissions_False" in r
    prior = p.heads.log_prior.exp()
    assert prior.sum() == pytest.approx(1.0, abs=1e-4) and p.tags[int(prior.argmax())] == "O"
    f, _ = p.features(["put the green cube in the blue bowl"])
    post = torch.log_softmax(p.heads.tag(in_context(f[0], p.tag_window)), -1)
    assert torch.allclose(p.emissions(f[0]), post - p.heads.log_prior)
    p.scaled_emissions = False
    assert torch.allclose(p.emissions(f[0]), post)
    # "the green block": the tagger is sure of "green" as a colour but reads the unseen "block" as O; the grammar
    # (a colour is always followed by its shape) lives in the transitions. Raw posteriors count the priors twice
    # and drop the slot; the scaled ones keep it.
    q = InstructionParser(["O", "object.color", "object.shape"], ["touch"], {}, features=p.features)
    q.heads.log_trans.copy_(torch.tensor([[-0.2, -3.2, -9.0], [-20.0, -20.0, 0.0], [-0.1, -9.0, -9.0],
                                          [-0.1, -3.0, -9.0]]))  # rows: from O, colour, shape, start
    q.heads.log_prior.copy_(torch.tensor([-0.36, -3.5, -3.5]))
    post = torch.tensor([[0.0, -20.0, -20.0], [-6.8, -0.01, -9.0], [-0.003, -12.0, -5.9]])  # the, green, block
    assert q.viterbi(post) == [0, 0, 0]
    assert q.viterbi(post - q.heads.log_prior) == [0, 1, 2]


def test_scene_mask_rules_out_colours_doors_and_furniture_the_scene_lacks(parse_run, capsys):
    import argparse

    from vlagym.experiments.commands.language import cmd_parse

    out, _ = parse_run
    # A navigation reset's scene: its landmarks, furniture and doors, all printed by `vlagym parse --env`.
    cmd_parse(argparse.Namespace(model=str(out), text=[], env="vlagym/NavRelationalGoal-v0", seed=2000000,
                                 level="L1"))
    printed = capsys.readouterr().out
    assert " door" in printed.split("scene: ")[1] and "true slots: " in printed
    p = InstructionParser.load(out)
    words = ["put", "the", "red", "cube", "in", "the", "blue", "bowl"]
    assert not p.scene_mask(words, None).any()
    mask = p.scene_mask(words, [{"color": "red", "shape": "cube"}, {"color": "green", "shape": "bowl"}])
    color = [j for j, t in enumerate(p.tags) if t.endswith(".color")]
    assert color and (mask[2, color] == 0).all() and (mask[6, color] < -1e8).all()  # no blue object
    assert (mask[:, p.tags.index("O")] == 0).all()


def test_alignment_scores_matching_words_and_the_default_envs_have_slot_readers():
    from vlagym.envs.registry import IDS

    words = ["put", "the", "red", "cube", "in", "the", "blue", "bowl"]
    tags = ["O", "O", "object.color", "object.shape", "O", "O", "destination.color", "destination.shape"]
    assert align_frame_of(words, tags) == "put the object in the object"
    torch.manual_seed(0)
    a, b = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    bank = torch.zeros(2, 5, 8)
    bank[0, :4], bank[1, :3] = a, b[:3]
    score = alignment(a, bank, torch.tensor([4, 3]))
    assert score[0] == pytest.approx(1.0) and score[1] < 0.9  # a sentence matches itself best, padding ignored
    cfg = ParseTrainConfig(out="x")
    assert cfg.env and all(IDS[e][1] in ("touch", "pick_up", "place", "stack", "push", "object_goal",
                                         "relational_goal", "multi_step") for e in cfg.env)
    with pytest.raises(ValueError, match="shape_rule must be one of"):
        ParseTrainConfig(out="x", shape_rule="nearest")


def test_template_rules_and_grounding_helpers():
    pairs = [{"instruction": "touch the red cube", "slots": {"task": "touch", "object": {"color": "red",
                                                                                        "shape": "cube"}},
              "tags": ["O", "O", "object.color", "object.shape"]}]
    rules = TemplateParser(pairs)
    assert rules.parse(["touch the blue cube", "poke the blue cube"]) == [
        {"task": "touch", "object": {"color": "blue", "shape": "cube"}}, {}]
    scene = [{"color": "red", "shape": "cube"}, {"color": "blue", "shape": "bowl"}, {"color": "red", "shape": "bowl"}]
    assert ground_parse({"object": {"color": "red", "shape": "cube"}, "destination": {"color": "blue",
                                                                                      "shape": "bowl"}}, scene) == \
        {"object": 0, "destination": 1}
    assert ground_parse({"object": {"color": "green", "shape": "cube"}}, scene) == {"object": None}


def test_corrupt_json_files_get_a_clear_error(tmp_path, parse_run):
    bad = tmp_path / "pairs.json"
    bad.write_text('{"pairs": [{"instruction": "touch')
    with pytest.raises(DatasetError, match="pairs.json: not valid JSON"):
        load_pairs(bad)
    bad.write_text('{"pairs": []}')
    with pytest.raises(DatasetError, match="at least one pair"):
        load_pairs(bad)
    out, _ = parse_run
    broken = tmp_path / "parser"
    broken.mkdir()
    (broken / "parser.json").write_text("{not json")
    with pytest.raises(DatasetError, match="parser.json: not valid JSON"):
        InstructionParser.load(broken)
    res = subprocess.run([sys.executable, "-m", "vlagym.experiments.cli", "parse", "--model", str(broken), "--text",
                          "touch the red cube"], capture_output=True, text=True, timeout=240)
    assert res.returncode != 0 and "not valid JSON" in res.stderr and "Traceback" not in res.stderr
