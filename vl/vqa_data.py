"""Question-answer data over vl-data images (``vlagym vqa-data``) and its COCO / Visual Genome export.

A vqa-data folder::

    images/          a vl-data folder (``vlagym.vl.data``: staged, resumable rendering), unless ``images=``
                     names an existing one, whose images are then reused as they are
    request.json     the question settings (checked on a rerun)
    scenes.json      CLEVR-style scenes: per image its seed, camera, level and objects (colour, shape, size,
                     pixel box, camera-frame position, bowl) and the relations as seen from the camera
    questions.json   CLEVR-style questions: image_index, seed, split, level, question, program, answer, family

``split`` is the seed split of the image's scene (``vlagym.core.splits``); ``level`` the held-out
colour-shape combination split of its objects (``vlagym.envs.levels.combo_split``: ``L3`` when one has a
novel colour, ``L2`` a held-out combination, else ``train``); ``levels=`` keeps only images of those levels.
Questions are generated image by image, each family preferring the answer it has given least so far, then
balanced once more per family (``questions.balance``); the same settings give the same questions.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vlagym.core.io import DatasetError, atomic_write_text, read_json
from vlagym.core.splits import SPLIT_SEED_START, split_of
from vlagym.vl.captions import ObjectView, related
from vlagym.vl.data import VLDataConfig, load_vl_data, make_vl_data
from vlagym.vl.questions import (
    FAMILIES,
    RELATIONS,
    answer_table,
    balance,
    check_families,
    image_questions,
)

QUESTIONS = "questions.json"
SCENES = "scenes.json"
LEVEL_ORDER = ("train", "L2", "L3")


@dataclass
class VQADataConfig:
    """What to render and ask."""

    out: str
    """Dataset folder (images/, scenes.json, questions.json)."""
    images: int = 2000
    """Images to render into out/images (ignored with --source)."""
    source: str | None = None
    """An existing vl-data folder whose images to reuse instead of rendering."""
    env: list[str] = field(default_factory=list)
    """Tabletop env ids to render (default: every tabletop env)."""
    split: str = "train"
    """Seed split of the rendered scenes: train, val or test."""
    image_size: int = 64
    """Camera resolution (square)."""
    p_in_bowl: float = 0.5
    """Chance that a scene with a bowl gets a graspable object set inside it."""
    families: list[str] | None = None
    """Question families to ask (default: all)."""
    per_family: int = 1
    """Questions per family per image (before balancing)."""
    levels: list[str] | None = None
    """Keep only images of these combination levels (train, L2, L3); default: all."""
    seed: int = 0
    """Seeds the question choice and the balancing."""

    def __post_init__(self) -> None:
        from vlagym.envs import TABLETOP_IDS

        self.env = list(self.env) or list(TABLETOP_IDS)
        self.families = check_families(self.families)
        if self.per_family < 1:
            raise ValueError(f"per_family must be >= 1, got {self.per_family}")
        if self.split not in SPLIT_SEED_START:
            raise ValueError(f"split must be one of {sorted(SPLIT_SEED_START)}, got {self.split!r}")
        if self.levels is not None:
            bad = [lv for lv in self.levels if lv not in LEVEL_ORDER]
            if bad:
                raise ValueError(f"levels must be among {LEVEL_ORDER}, got {bad}")


def image_level(objects: list[ObjectView]) -> str:
    """The held-out combination split of an image: the furthest of its visible objects' (L3 > L2 > train)."""
    from vlagym.envs.levels import combo_split
    from vlagym.envs.tabletop.objects import COLORS, SHAPES

    splits = [combo_split("tabletop", o.color, o.shape, list(COLORS), SHAPES) for o in objects if o.visible]
    return max(splits, key=LEVEL_ORDER.index, default="train")


def scene_record(index: int, meta: dict[str, Any], objects: list[ObjectView]) -> dict[str, Any]:
    """A CLEVR-style scene: objects and, per relation, for object j the indices of the objects ``rel`` it."""
    vis = [o for o in objects if o.visible]
    rels = RELATIONS if meta["camera"] == "rgb" else RELATIONS[:2]
    pos = {o.index: k for k, o in enumerate(vis)}
    return {
        "image_index": index, "seed": meta["seed"], "env": meta["env"], "camera": meta["camera"],
        "split": split_of(meta["seed"]), "level": image_level(objects),
        "objects": [{"index": o.index, "color": o.color, "shape": o.shape, "size": o.size, "box": o.box,
                     "x": round(o.x, 5), "depth": round(o.depth, 5), "pixels": o.pixels,
                     "in_bowl": pos.get(o.in_bowl)} for o in vis],
        # CLEVR's convention: relationships[rel][j] lists the objects that are ``rel`` object j.
        "relationships": {rel: [[k for k, p in enumerate(vis) if p.index != o.index and related(p, o, rel)]
                                for o in vis] for rel in rels},
    }


def make_vqa_data(cfg: VQADataConfig) -> dict[str, Any]:
    """Render (or reuse) the images, ask the questions, write the JSON files; returns the info block."""
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    if cfg.source:
        images_dir = Path(cfg.source)
    else:
        images_dir = root / "images"
        make_vl_data(VLDataConfig(env=cfg.env, images=cfg.images, out=str(images_dir), split=cfg.split,
                                  image_size=cfg.image_size, cameras=("rgb",), p_in_bowl=cfg.p_in_bowl))
    request = json.loads(json.dumps({**asdict(cfg), "source": str(images_dir.resolve())}))
    request.pop("out")
    if cfg.source:
        for k in ("images", "env", "split", "image_size", "p_in_bowl"):
            request.pop(k)
    request_path = root / "request.json"
    if request_path.exists():
        previous = read_json(request_path)
        if previous != request:
            diff = sorted(k for k in set(previous) | set(request) if previous.get(k) != request.get(k))
            raise ValueError(f"{root} holds questions made with other settings ({', '.join(diff)}); "
                             f"use another --out or the same options")
        if (root / QUESTIONS).exists():
            return read_json(root / QUESTIONS)["info"]
    atomic_write_text(request_path, json.dumps(request, indent=2))

    data = load_vl_data(images_dir)
    rng = np.random.default_rng([cfg.seed, 22])
    counts = {f: Counter() for f in FAMILIES}
    text_counts: Counter = Counter()
    scenes, questions = [], []
    for i in tqdm(range(len(data)), desc="vqa-data", unit="img", dynamic_ncols=True):
        objects, meta = data.objects(i), data.meta[i]
        scene = scene_record(i, meta, objects)
        if cfg.levels is not None and scene["level"] not in cfg.levels:
            continue
        scenes.append(scene)
        for q in image_questions(objects, meta["camera"], rng, counts, cfg.families, cfg.per_family,
                                     text_counts):
            questions.append({"image_index": i, "seed": meta["seed"], "camera": meta["camera"],
                              "split": scene["split"], "level": scene["level"], **q})
    questions = balance(questions, rng)
    for k, q in enumerate(questions):
        q["question_index"] = k
    info = {"images": str(images_dir.resolve()), "scenes": len(scenes), "questions": len(questions),
            "families": cfg.families, "answers": answer_table(questions),
            "splits": dict(Counter(s["split"] for s in scenes)), "levels": dict(Counter(s["level"] for s in scenes))}
    atomic_write_text(root / SCENES, json.dumps({"info": info, "scenes": scenes}))
    atomic_write_text(root / QUESTIONS, json.dumps({"info": info, "questions": questions}))
    return info


# --- reading ----------------------------------------------------------------------------------------------------
REQUIRED = ("image_index", "question", "program", "answer", "family")


@dataclass
class VQAData:
    """A vqa-data folder: the vl-data ``images`` (N, H, W, 3), its scenes and questions."""

    images: np.ndarray
    scenes: list[dict[str, Any]]
    questions: list[dict[str, Any]]
    meta: list[dict[str, Any]]
    root: Path
    masks: np.ndarray | None = None
    """The vl-data instance masks (N, H, W): each pixel's object index, -1 for none."""

    def __len__(self) -> int:
        return len(self.questions)


def _read(path: Path, key: str) -> list[dict[str, Any]]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; is {path.parent} a folder written by vqa-data?")
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise DatasetError(f"{path}: expected an object with a {key!r} list")
    return doc[key]


def load_vqa_data(root: str | os.PathLike) -> VQAData:
    """Read a vqa-data folder; ``DatasetError`` names a corrupt or inconsistent file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no vqa-data folder at {root}")
    questions = _read(root / QUESTIONS, "questions")
    scenes = _read(root / SCENES, "scenes")
    request = read_json(root / "request.json") if (root / "request.json").exists() else {}
    images_dir = Path(request.get("source") or root / "images")
    data = load_vl_data(images_dir)
    for k, q in enumerate(questions):
        missing = [f for f in REQUIRED if f not in q]
        if missing:
            raise DatasetError(f"{root / QUESTIONS}: question {k} lacks {missing}")
        if not 0 <= int(q["image_index"]) < len(data):
            raise DatasetError(f"{root / QUESTIONS}: question {k} names image {q['image_index']}, but "
                               f"{images_dir} holds {len(data)} images")
    return VQAData(data.images, scenes, questions, data.meta, root, data.masks)


# --- export ------------------------------------------------------------------------------------------------------
def _save_pngs(data: VQAData, folder: Path, indices: list[int]) -> dict[int, str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for i in indices:
        name = f"{data.meta[i]['seed']:07d}_{data.meta[i]['camera']}.png"
        if not (folder / name).exists():
            Image.fromarray(data.images[i]).save(folder / name)
        names[i] = name
    return names


def export_coco(data: VQAData, out: str | os.PathLike) -> dict[str, Path]:
    """``captions.json`` (COCO captions: images, annotations with caption) and ``instances.json`` (COCO
    detection: boxes ``[x, y, w, h]``, categories by shape, the colour and size as attributes) with PNGs."""
    out = Path(out)
    indices = [s["image_index"] for s in data.scenes]
    names = _save_pngs(data, out / "images", indices)
    h, w = data.images.shape[1:3]
    images = [{"id": i, "file_name": f"images/{names[i]}", "width": int(w), "height": int(h),
               "seed": data.meta[i]["seed"]} for i in indices]
    from vlagym.envs.tabletop.objects import SHAPES

    categories = [{"id": k + 1, "name": s, "supercategory": "object"} for k, s in enumerate(SHAPES)]
    captions, instances = [], []
    for i in indices:
        for c in data.meta[i]["captions"]:
            captions.append({"id": len(captions) + 1, "image_id": i, "caption": c})
    scene_of = {s["image_index"]: s for s in data.scenes}
    for i in indices:
        for o in scene_of[i]["objects"]:
            if o["box"] is None:
                continue
            x0, y0, x1, y1 = o["box"]
            instances.append({"id": len(instances) + 1, "image_id": i, "category_id": SHAPES.index(o["shape"]) + 1,
                              "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(o["pixels"]), "iscrowd": 0,
                              "attributes": {"color": o["color"], "size": o["size"]}})
    info = {"description": "vlagym tabletop scenes (vqa-data export)", "version": "1.0"}
    paths = {"captions": out / "captions.json", "instances": out / "instances.json"}
    atomic_write_text(paths["captions"], json.dumps({"info": info, "images": images, "annotations": captions,
                                                     "licenses": []}))
    atomic_write_text(paths["instances"], json.dumps({"info": info, "images": images, "annotations": instances,
                                                      "categories": categories, "licenses": []}))
    return paths


def export_vg(data: VQAData, out: str | os.PathLike) -> dict[str, Path]:
    """Visual Genome's ``image_data.json``, ``objects.json``, ``attributes.json`` and ``scene_graphs.json``
    (objects with boxes x, y, w, h and names; relationships subject-predicate-object; "in" for bowls) and
    ``question_answers.json`` with PNGs."""
    out = Path(out)
    indices = [s["image_index"] for s in data.scenes]
    names = _save_pngs(data, out / "images", indices)
    h, w = data.images.shape[1:3]
    image_data, graphs = [], []
    oid = rid = 0
    for s in data.scenes:
        i = s["image_index"]
        image_data.append({"image_id": i, "width": int(w), "height": int(h), "url": f"images/{names[i]}",
                           "coco_id": None, "flickr_id": None})
        ids, objs = [], []
        for o in s["objects"]:
            oid += 1
            ids.append(oid)
            x0, y0, x1, y1 = o["box"] or (0, 0, 0, 0)
            objs.append({"object_id": oid, "x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0, "names": [o["shape"]],
                         "synsets": [], "attributes": [o["color"], o["size"]]})
        rels = []
        for rel, lists in s["relationships"].items():
            for j, subjects in enumerate(lists):
                for k in subjects:
                    rid += 1
                    rels.append({"relationship_id": rid, "predicate": rel, "subject_id": ids[k], "object_id": ids[j],
                                 "synsets": []})
        for k, o in enumerate(s["objects"]):
            if o["in_bowl"] is not None:
                rid += 1
                rels.append({"relationship_id": rid, "predicate": "in", "subject_id": ids[k],
                             "object_id": ids[o["in_bowl"]], "synsets": []})
        graphs.append({"image_id": i, "objects": objs, "relationships": rels})
    qa_by_image: dict[int, list] = {}
    for q in data.questions:
        qa_by_image.setdefault(q["image_index"], []).append(
            {"qa_id": q.get("question_index", 0), "image_id": q["image_index"], "question": q["question"],
             "answer": q["answer"], "q_objects": [], "a_objects": []})
    paths = {k: out / f"{k}.json" for k in ("image_data", "objects", "attributes", "scene_graphs",
                                             "question_answers")}
    atomic_write_text(paths["image_data"], json.dumps(image_data))
    atomic_write_text(paths["scene_graphs"], json.dumps(graphs))
    atomic_write_text(paths["objects"], json.dumps(
        [{"image_id": g["image_id"], "objects": [{k: v for k, v in o.items() if k != "attributes"}
                                                 for o in g["objects"]]} for g in graphs]))
    atomic_write_text(paths["attributes"], json.dumps([{"image_id": g["image_id"], "attributes": g["objects"]}
                                                       for g in graphs]))
    atomic_write_text(paths["question_answers"], json.dumps(
        [{"id": i, "qas": qa_by_image.get(i, [])} for i in indices]))
    return paths
