"""Caption and parsing metrics: BLEU (sacrebleu), ROUGE-L (rouge-score), CIDEr-D, exact match and slot F1.

BLEU is sacrebleu's corpus BLEU-4 with its ``13a`` tokenizer, case-sensitive, ``exp`` smoothing (sacrebleu's
defaults; the signature is returned beside the score) on sacrebleu's 0-100 scale; images may have different
numbers of references. ROUGE-L is rouge-score's sentence-level ROUGE-L F-measure, the best over an image's
references, averaged over images (0-1).

CIDEr-D (Vedantam et al. 2015, as the coco-caption toolkit computes it and ``pycocoevalcap``'s ``Cider``
reports it) is written here: TF-IDF vectors of 1- to 4-grams, the document frequencies taken over the
references of the evaluated corpus, per-n cosine similarity with the candidate's weights clipped at the
reference's, a Gaussian length penalty (sigma 6), averaged over n and over references, times 10. Like
coco-caption, the length is counted in bigrams. Sentences are lower-cased and stripped of punctuation first
(what coco-caption's PTB tokenizer does to our captions).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BLEU_TOKENIZER = "13a"
BLEU_SMOOTHING = "exp"
CIDER_SIGMA = 6.0
_PUNCT = re.compile(r"[^\w\s]")


def _check_corpus(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[list[str]]:
    if len(hypotheses) == 0:
        raise ValueError("the caption set is empty: no hypotheses to score")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    refs = []
    for i, (h, r) in enumerate(zip(hypotheses, references)):
        if not isinstance(h, str):
            raise ValueError(f"hypothesis {i} is not a string: {h!r}")
        r = [r] if isinstance(r, str) else list(r)
        if not r or not all(isinstance(x, str) for x in r):
            raise ValueError(f"image {i} needs at least one reference string, got {r!r}")
        refs.append(r)
    return refs


def bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Corpus BLEU-4 (0-100), its n-gram precisions, brevity penalty and sacrebleu signature."""
    from sacrebleu.metrics import BLEU

    refs = _check_corpus(hypotheses, references)
    n = max(len(r) for r in refs)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(n)]
    metric = BLEU(tokenize=BLEU_TOKENIZER, smooth_method=BLEU_SMOOTHING)
    s = metric.corpus_score(list(hypotheses), streams)
    return {"bleu4": float(s.score), "precisions": [float(p) for p in s.precisions], "bp": float(s.bp),
            "signature": str(metric.get_signature())}


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over images of the best ROUGE-L F-measure against the image's references (0-1)."""
    from rouge_score import rouge_scorer

    refs = _check_corpus(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return float(np.mean([scorer.score_multi(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, refs)]))


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return _PUNCT.sub(" ", text.lower()).split()


def _ngrams(words: list[str], n: int = 4) -> Counter:
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4,
            sigma: float = CIDER_SIGMA) -> dict[str, Any]:
    """Corpus CIDEr-D and the per-image scores (the corpus score is their mean)."""
    refs = _check_corpus(hypotheses, references)
    hyp_counts = [_ngrams(normalize(h), n) for h in hypotheses]
    ref_counts = [[_ngrams(normalize(x), n) for x in r] for r in refs]
    df: Counter = Counter()
    for rc in ref_counts:
        df.update({g for c in rc for g in c})
    log_n = math.log(len(refs))

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        for g, tf in counts.items():
            vec[len(g) - 1][g] = tf * (log_n - math.log(max(1.0, df[g])))
        norms = [math.sqrt(sum(v * v for v in d.values())) for d in vec]
        bigrams = sum(tf for g, tf in counts.items() if len(g) == 2)  # coco-caption's length
        return vec, norms, bigrams

    scores = []
    for hc, rcs in zip(hyp_counts, ref_counts):
        vh, nh, lh = vector(hc)
        total = np.zeros(n)
        for rc in rcs:
            vr, nr, lr = vector(rc)
            for k in range(n):
                dot = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] and nr[k]:
                    dot /= nh[k] * nr[k]
                total[k] += dot * math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
        scores.append(10.0 * float(total.mean()) / len(rcs))
    return {"cider_d": float(np.mean(scores)), "per_image": scores}


def caption_report(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """BLEU-4, ROUGE-L and CIDEr-D of one caption set (rounded), with the BLEU signature."""
    b = bleu(hypotheses, references)
    return {"bleu4": round(b["bleu4"], 2), "bleu_precisions": [round(p, 1) for p in b["precisions"]],
            "bleu_signature": b["signature"], "rouge_l": round(rouge_l(hypotheses, references), 4),
            "cider_d": round(cider_d(hypotheses, references)["cider_d"], 4), "images": len(hypotheses)}


# --- parsing ---------------------------------------------------------------------------------------------------
def _flat(slots: Mapping[str, Any], prefix: str = "") -> set[tuple[str, str]]:
    out = set()
    for k, v in slots.items():
        if isinstance(v, Mapping):
            out |= _flat(v, f"{prefix}{k}.")
        elif v is not None:
            out.add((f"{prefix}{k}", str(v)))
    return out


def parse_scores(predicted: Sequence[Mapping[str, Any]], gold: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Exact match (every slot right, none extra) and micro slot precision, recall and F1 over
    (slot, value) pairs; nested slots (``object.color``) count one pair each."""
    if len(gold) == 0:
        raise ValueError("no parses to score")
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions but {len(gold)} gold parses")
    tp = fp = fn = exact = 0
    for p, g in zip(predicted, gold):
        ps, gs = _flat(p), _flat(g)
        tp += len(ps & gs)
        fp += len(ps - gs)
        fn += len(gs - ps)
        exact += ps == gs
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"exact_match": exact / len(gold), "slot_precision": precision, "slot_recall": recall, "slot_f1": f1,
            "n": len(gold)}
