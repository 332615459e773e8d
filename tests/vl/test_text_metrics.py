"""Caption metrics agree with the libraries (sacrebleu, rouge-score, pycocoevalcap) and a hand computation."""

from __future__ import annotations

import pytest

from vlagym.vl.text_metrics import bleu, caption_report, cider_d, parse_scores, rouge_l

HYPS = ["a red cube on a table", "the blue bowl is left of the green cylinder", "a photo of a yellow cube",
        "a table with a red cube and a blue bowl"]
REFS = [["a red cube on a table", "a photo of a red cube"],
        ["the blue bowl is left of the green cylinder", "a blue bowl left of a green cylinder", "a blue bowl"],
        ["a photo of a purple cube"],
        ["a table with a red cube , a blue bowl and a green cylinder", "a red cube"]]


def test_bleu_is_sacrebleus_corpus_bleu_with_its_stated_tokenizer_and_smoothing():
    import sacrebleu

    b = bleu(HYPS, REFS)
    streams = [[r[k] if k < len(r) else None for r in REFS] for k in range(3)]
    want = sacrebleu.corpus_bleu(HYPS, streams, tokenize="13a", smooth_method="exp")
    assert b["bleu4"] == pytest.approx(want.score)
    assert "tok:13a" in b["signature"] and "smooth:exp" in b["signature"]
    assert bleu(["a red cube on a table"], [["a red cube on a table"]])["bleu4"] == pytest.approx(100.0)
    assert 0.0 < b["bleu4"] < 100.0


def test_rouge_l_is_rouge_scores_best_reference_f_measure():
    from rouge_score import rouge_scorer

    s = rouge_scorer.RougeScorer(["rougeL"])
    want = sum(max(s.score(r, h)["rougeL"].fmeasure for r in refs) for h, refs in zip(HYPS, REFS)) / len(HYPS)
    assert rouge_l(HYPS, REFS) == pytest.approx(want)
    # LCS of "a blue cube" and "a blue bowl" is 2 of 3 words: P = R = F = 2/3.
    assert rouge_l(["a blue cube"], [["a blue bowl"]]) == pytest.approx(2 / 3)


def test_cider_d_matches_pycocoevalcap():
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [" ".join(r.replace(",", " ").split()) for r in refs] for i, refs in enumerate(REFS)}
    res = {i: [h] for i, h in enumerate(HYPS)}
    want, per_image = Cider().compute_score(gts, res)
    got = cider_d(HYPS, REFS)
    assert got["cider_d"] == pytest.approx(want, abs=1e-9)
    assert got["per_image"] == pytest.approx(list(per_image), abs=1e-9)


def test_cider_d_hand_computed():
    # Two images, one reference each. idf = log 2 - log df: "a" is in both references (weight 0); every other
    # n-gram has df 1 or 0 (weight log 2). Image 1 matches its reference: cosine 1 for 1-3-grams, no 4-grams
    # (0), mean 3/4 -> 7.5. Image 2 ("a blue cube" vs "a blue bowl"): unigram and bigram cosines 1/2, trigram
    # 0 -> mean 1/4 -> 2.5. Corpus: 5.0.
    got = cider_d(["a red cube", "a blue cube"], [["a red cube"], ["a blue bowl"]])
    assert got["per_image"] == pytest.approx([7.5, 2.5])
    assert got["cider_d"] == pytest.approx(5.0)
    # Punctuation and case do not count.
    assert cider_d(["A red cube.", "a blue cube"], [["a red cube"], ["a blue bowl"]])["cider_d"] == pytest.approx(5.0)


def test_empty_or_mismatched_caption_sets_are_refused():
    for fn in (bleu, rouge_l, cider_d, caption_report):
        with pytest.raises(ValueError, match="caption set is empty"):
            fn([], [])
        with pytest.raises(ValueError, match="2 hypotheses but 1 reference"):
            fn(["a", "b"], [["a"]])
        with pytest.raises(ValueError, match="at least one reference"):
            fn(["a"], [[]])


def test_parse_scores_exact_match_and_slot_f1():
    gold = [{"task": "place", "object": {"color": "red", "shape": "cube"}, "destination": {"color": "blue",
                                                                                         "shape": "bowl"}},
            {"task": "touch", "object": {"color": "green", "shape": "cylinder"}}]
    pred = [{"task": "place", "object": {"color": "red", "shape": "cube"}, "destination": {"color": "green",
                                                                                         "shape": "bowl"}},
            {"task": "touch", "object": {"color": "green", "shape": "cylinder"}}]
    s = parse_scores(pred, gold)
    # 8 gold pairs, 8 predicted, 7 right.
    assert s["exact_match"] == 0.5
    assert s["slot_precision"] == pytest.approx(7 / 8) and s["slot_recall"] == pytest.approx(7 / 8)
    assert s["slot_f1"] == pytest.approx(7 / 8)
    assert parse_scores(gold, gold)["exact_match"] == 1.0
    with pytest.raises(ValueError, match="no parses"):
        parse_scores([], [])
