"""vqa-data (files, determinism, reuse of vl-data images, errors), a tiny VQA train-and-eval run, the exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vlagym.core.io import DatasetError
from vlagym.experiments.cli import main
from vlagym.vl.questions import execute
from vlagym.vl.vqa import FUSIONS, QuestionPrior, VQAConfig, VQAModel, eval_vqa, train_vqa
from vlagym.vl.vqa_data import VQADataConfig, export_coco, export_vg, load_vqa_data, make_vqa_data

ENVS = ["vlagym/TabletopPlace-v0", "vlagym/TabletopTouch-v0"]


@pytest.fixture(scope="module")
def vqa_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa") / "d"
    make_vqa_data(VQADataConfig(out=str(root), images=10, env=ENVS, image_size=32, per_family=2))
    return root


def test_questions_json_is_clevr_like_and_answers_come_from_the_programs(vqa_dir):
    data = load_vqa_data(vqa_dir)
    assert data.images.shape[1:] == (32, 32, 3) and len(data.scenes) == 10
    assert len(data) > 50
    scene_of = {s["image_index"]: s for s in data.scenes}
    for q in data.questions:
        assert {"image_index", "question", "program", "answer", "family", "split", "level", "seed"} <= set(q)
        assert q["split"] == "train" and q["level"] in ("train", "L2", "L3")
        assert all(set(n) == {"function", "inputs", "value_inputs"} for n in q["program"])
        from vlagym.vl.captions import ObjectView

        objects = [ObjectView(**o) for o in data.meta[q["image_index"]]["objects"]]
        assert execute(q["program"], objects, q["camera"]) == q["answer"]
        assert scene_of[q["image_index"]]["seed"] == q["seed"]


def test_same_settings_same_questions_and_reuse_of_vl_data_images(vqa_dir, tmp_path):
    again = tmp_path / "again"
    make_vqa_data(VQADataConfig(out=str(again), source=str(vqa_dir / "images"), per_family=2))
    a = json.loads((vqa_dir / "questions.json").read_text())["questions"]
    b = json.loads((again / "questions.json").read_text())["questions"]
    assert a == b
    assert not (again / "images").exists()  # the images were read from the source, not rendered again
    with pytest.raises(ValueError, match="other settings .*per_family"):
        make_vqa_data(VQADataConfig(out=str(again), source=str(vqa_dir / "images"), per_family=1))


def test_corrupt_or_inconsistent_json_is_a_clear_error(vqa_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(vqa_dir, bad, ignore=shutil.ignore_patterns("images"))
    (bad / "request.json").write_text(json.dumps({**json.loads((bad / "request.json").read_text()),
                                                  "source": str(vqa_dir / "images")}))
    text = (bad / "questions.json").read_text()
    (bad / "questions.json").write_text(text[: len(text) // 2])
    with pytest.raises(DatasetError, match="questions.json: not valid JSON"):
        load_vqa_data(bad)
    doc = json.loads(text)
    doc["questions"][0]["image_index"] = 999
    (bad / "questions.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="names image 999"):
        load_vqa_data(bad)
    with pytest.raises(ValueError, match="unknown question families"):
        VQADataConfig(out=str(bad), families=["exist", "telepathy"])


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_answers_a_batch(fusion):
    m = VQAModel(fusion, model_cfg={"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                                    "head_width": 16, "patch_size": 8},
                                     "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32,
                                                  "heads": 2, "layers": 1}}, image_size=32)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    logits = m(images, ["Is there a cube?", "How many objects are there?", "What is in the red bowl?"],
               torch.tensor([0, 1, 1]))
    assert logits.shape == (3, len(m.answers))
    logits.sum().backward()
    first = m.filmnet.stem[0] if fusion == "film" else m.vl.clip.visual.conv1
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0  # the image reaches the loss


def test_film_modulates_each_question_and_sees_where_things_are():
    from vlagym.vl.vqa import coord_maps

    m = VQAModel("film", model_cfg=TINY, image_size=32, fusion_layers=2, film_width=16).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        for p in m.filmnet.film.parameters():
            p.normal_()
        qs = ["Is there a cube?", "What colour is the bowl?"]
        one = m(images, qs, torch.tensor([0, 0]))
        assert not torch.allclose(one[0], one[1])  # the question changes the answer on the same image
        other = m(images, qs[:1], torch.tensor([1]))
        assert not torch.allclose(one[0], other[0])  # and so does the image
        assert torch.allclose(m(images[[1, 0]], qs[:1], torch.tensor([1])), one[:1], atol=1e-5)  # row lookup
    c = coord_maps(torch.zeros(1, 1, 2, 3))
    assert c.shape == (1, 3, 2, 3) and c[0, 1, 0].tolist() == [-1, 0, 1] and c[0, 2, :, 0].tolist() == [-1, 1]
    loaded_cfg = m.config_dict()
    assert loaded_cfg["fusion"] == "film" and loaded_cfg["film_width"] == 16


TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_tiny_train_and_eval_end_to_end(vqa_dir, tmp_path, capsys):
    cfg = VQAConfig(data=str(vqa_dir), eval_data=str(vqa_dir), out=str(tmp_path / "run"), model_cfg=TINY, steps=30,
                    batch_size=4, questions_per_image=4, eval_every=30, checkpoint_every=30, warmup=3, lr=3e-3)
    m = train_vqa(cfg)
    first, last = m["history"][0]["loss"], m["history"][-1]["loss"]
    assert last < first  # it learns something on its own training questions
    final = m["final"]
    assert set(final["model"]["per_family"]) == {q["family"] for q in load_vqa_data(vqa_dir).questions}
    assert 0 <= final["blind"]["accuracy"] <= 1 and "gap_points" in final
    assert (tmp_path / "run" / "model" / "vqa_model.safetensors").exists()
    again = eval_vqa(tmp_path / "run", vqa_dir, "cpu")
    assert again["model"] == final["model"]  # the saved model answers as the trained one did
    assert main(["vqa-eval", "--model", str(tmp_path / "run"), "--data", str(vqa_dir),
                 "--out", str(tmp_path / "r.json")]) == 0
    assert "overall" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["model"]["accuracy"] == final["model"]["accuracy"]
    # A finished run resumes to the same numbers; other settings are refused.
    assert train_vqa(cfg)["final"]["model"] == final["model"]
    with pytest.raises(ValueError, match="different settings"):
        train_vqa(VQAConfig(**{**cfg.__dict__, "lr": 1e-3}))


def test_blind_prior_answers_from_the_question_alone():
    qs = [{"question": "Is there a cube?", "family": "exist", "answer": a} for a in ("yes", "yes", "no")]
    qs += [{"question": "Is there a bowl?", "family": "exist", "answer": "no"}]
    p = QuestionPrior(qs)
    assert p.answer({"question": "Is there a cube?", "family": "exist"}) == "yes"
    assert p.answer({"question": "Is there a ball?", "family": "exist"}) == "no"  # the family's prior (2-2 tie)


def test_coco_and_visual_genome_exports_read_back(vqa_dir, tmp_path):
    coco = pytest.importorskip("pycocotools.coco")
    data = load_vqa_data(vqa_dir)
    paths = export_coco(data, tmp_path / "coco")
    caps = coco.COCO(str(paths["captions"]))
    inst = coco.COCO(str(paths["instances"]))
    img = caps.getImgIds()[0]
    assert {a["caption"] for a in caps.loadAnns(caps.getAnnIds(imgIds=img))} == set(data.meta[img]["captions"])
    scene = next(s for s in data.scenes if s["image_index"] == img)
    anns = inst.loadAnns(inst.getAnnIds(imgIds=img))
    assert len(anns) == len(scene["objects"])
    x0, y0, x1, y1 = scene["objects"][0]["box"]
    assert anns[0]["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    assert (tmp_path / "coco" / inst.loadImgs(img)[0]["file_name"]).exists()
    vg = export_vg(data, tmp_path / "vg")
    graphs = json.loads(vg["scene_graphs"].read_text())
    assert len(graphs) == len(data.scenes)
    g = graphs[0]
    ids = {o["object_id"] for o in g["objects"]}
    assert all(r["subject_id"] in ids and r["object_id"] in ids for r in g["relationships"])
    preds = {r["predicate"] for gr in graphs for r in gr["relationships"]}
    assert preds & {"left of", "right of"}
    qa = json.loads(vg["question_answers"].read_text())
    assert sum(len(x["qas"]) for x in qa) == len(data)
    assert main(["vqa-export", "--data", str(vqa_dir), "--format", "vg", "--out", str(tmp_path / "vg2")]) == 0


def test_fewshot_sequences_mask_each_word_to_its_own_image_and_a_tiny_run_gives_the_curve(vqa_dir, tmp_path):
    from vlagym.vl.fewshot import FewShotConfig, Vocab, build_sequences, train_fewshot

    data = load_vqa_data(vqa_dir)
    vocab = Vocab(data.questions)
    tokens, image_slot, slot_of_token, qpos, rows = build_sequences(
        [[(0, "Is there a cube?", "yes"), (1, "Is there a bowl?", None)]], vocab)
    assert rows == [0, 1] and image_slot.tolist() == [[0, 1]]
    assert tokens[0, qpos[0]] == vocab.stoi["<answer>"] and int(qpos[0]) == len(tokens[0]) - 1
    second = int((tokens[0] == vocab.stoi["<image>"]).nonzero()[1])
    assert (slot_of_token[0, :second] == 0).all() and (slot_of_token[0, second:] == 1).all()
    assert tokens[0, second - 2] == vocab.answer("yes")  # the example's answer sits in context
    fam = data.questions[0]["family"]
    vision = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                              "patch_size": 8}, "text_cfg": TINY["text_cfg"]}
    res = train_fewshot(FewShotConfig(data=str(vqa_dir), eval_data=str(vqa_dir), out=str(tmp_path / "fs"),
                                      held_out=fam, steps=3, batch_size=2, eval_queries=4, width=32, latents=2,
                                      layers=1, vision_cfg=vision, max_shots=2, shots=[0, 2]))
    assert [c["shots"] for c in res["curve"]] == [0, 2] and all(0 <= c["accuracy"] <= 1 for c in res["curve"])
    assert all(c["accuracy_options"] >= c["accuracy"] for c in res["curve"])  # a closed set can only help
    assert (tmp_path / "fs" / "fewshot_model.safetensors").exists()
    assert json.loads((tmp_path / "fs" / "fewshot.json").read_text())["held_out"] == fam
    with pytest.raises(ValueError, match="unknown question families"):
        FewShotConfig(data="a", eval_data="b", held_out="telepathy")


def test_film_trains_and_the_saved_model_answers_the_same(vqa_dir, tmp_path):
    cfg = VQAConfig(data=str(vqa_dir), eval_data=str(vqa_dir), out=str(tmp_path / "film"), fusion="film",
                    model_cfg=TINY, fusion_layers=2, film_width=16, steps=12, batch_size=4, questions_per_image=4,
                    eval_every=12, checkpoint_every=12, warmup=2, lr=3e-3)
    m = train_vqa(cfg)
    assert m["final"]["model"]["n"] == len(load_vqa_data(vqa_dir))
    again = eval_vqa(tmp_path / "film", vqa_dir, "cpu")
    assert again["model"] == m["final"]["model"]  # batch-norm statistics travel with the weights
