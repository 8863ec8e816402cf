"""Tests for effkit.metrics: hand-worked values, reference values, edge cases and properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effkit.metrics import (
    accuracy,
    bio_spans,
    classification_metrics,
    entity_scores,
    f1_binary,
    f1_macro,
    matthews,
    mean_std,
    pearson,
    regression_metrics,
    spearman,
    token_metrics,
)

# --------------------------------------------------------------------------- classification


def test_accuracy_known_value() -> None:
    # Positions 0, 1 and 3 agree: 3 / 5.
    assert accuracy([0, 1, 1, 0, 1], [0, 1, 0, 0, 0]) == pytest.approx(0.6)


def test_accuracy_perfect_and_worst() -> None:
    assert accuracy([2, 0, 1], [2, 0, 1]) == 1.0
    assert accuracy([1, 1, 0], [0, 0, 1]) == 0.0


def test_f1_binary_known_value() -> None:
    # tp = 2 (positions 0, 3), fp = 1 (position 1), fn = 1 (position 4):
    # F1 = 2*2 / (2*2 + 1 + 1) = 4/6.
    assert f1_binary([1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 1, 0]) == pytest.approx(2 / 3)


def test_f1_binary_other_positive_and_degenerate() -> None:
    # Class 0 as positive: tp = 2 (positions 2, 5), fp = 1 (position 4), fn = 1 (position 1).
    assert f1_binary([1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 1, 0], positive=0) == pytest.approx(2 / 3)
    # No positive predicted or true: 0/0, reported as 0.0.
    assert f1_binary([0, 0], [0, 0]) == 0.0
    assert f1_binary([1, 0], [0, 1]) == 0.0
    assert f1_binary([1, 0], [1, 0]) == 1.0


def test_f1_macro_known_value() -> None:
    # class 0: tp 1, fp 1, fn 1 -> 2/4; class 1: tp 1, fp 0, fn 1 -> 2/3;
    # class 2: tp 2, fp 1, fn 0 -> 4/5.  Mean = (1/2 + 2/3 + 4/5) / 3 = 59/90 (sklearn agrees).
    preds = [0, 0, 1, 2, 2, 2]
    labels = [0, 1, 1, 2, 2, 0]
    assert f1_macro(preds, labels) == pytest.approx(59 / 90)
    assert f1_macro(preds, labels, num_labels=3) == pytest.approx(0.6555555555555556)


def test_f1_macro_averages_over_union_only() -> None:
    # Class 0: tp 1, fn 1 -> 2/3; class 2 only predicted -> 0.  Classes 1, 3, 4 never occur
    # and do not count: (2/3 + 0) / 2 = 1/3.
    assert f1_macro([0, 2], [0, 0]) == pytest.approx(1 / 3)
    assert f1_macro([0, 2], [0, 0], num_labels=5) == pytest.approx(1 / 3)


def test_f1_macro_rejects_values_outside_num_labels() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        f1_macro([0, 2], [0, 1], num_labels=2)


def test_matthews_multiclass_known_value() -> None:
    # Confusion (rows true, cols pred) [[1,1,0],[0,1,1],[1,0,1]]: t = p = (2,2,2), c = 3, s = 6.
    # MCC = (3*6 - 12) / sqrt((36 - 12) * (36 - 12)) = 6 / 24 = 0.25 (sklearn agrees).
    assert matthews([0, 1, 1, 2, 2, 0], [0, 0, 1, 1, 2, 2]) == pytest.approx(0.25)


def test_matthews_binary_known_value() -> None:
    # tp 3, tn 3, fp 1, fn 1: (3*3 - 1*1) / sqrt(4*4*4*4) = 8 / 16.
    assert matthews([1, 1, 1, 0, 0, 0, 0, 1], [1, 1, 1, 1, 0, 0, 0, 0]) == pytest.approx(0.5)


def test_matthews_perfect_worst_and_undefined() -> None:
    labels = [0, 1, 1, 0, 1]
    assert matthews(labels, labels) == pytest.approx(1.0)
    assert matthews([1 - v for v in labels], labels) == pytest.approx(-1.0)
    # A constant prediction makes the denominator zero.
    assert matthews([1, 1, 1, 1, 1], labels) == 0.0
    assert matthews([0, 0, 0], [0, 0, 0]) == 0.0


def test_classification_metrics_keys_and_values() -> None:
    out = classification_metrics([1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 1, 0], num_labels=2)
    assert set(out) == {"accuracy", "f1_macro", "matthews", "f1"}
    # 4 of 6 correct; both classes have F1 2/3; tp = tn = 2, fp = fn = 1 -> MCC (4-1)/9.
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["f1_macro"] == pytest.approx(2 / 3)
    assert out["matthews"] == pytest.approx(1 / 3)
    assert all(type(v) is float for v in out.values())


def test_classification_metrics_multiclass_has_no_binary_f1() -> None:
    out = classification_metrics([0, 1, 2], [0, 1, 2], num_labels=3)
    assert set(out) == {"accuracy", "f1_macro", "matthews"}
    assert out == {"accuracy": 1.0, "f1_macro": 1.0, "matthews": 1.0}


def test_classification_metrics_checks_label_range() -> None:
    with pytest.raises(ValueError, match="labels contain values outside"):
        classification_metrics([0, 1], [0, 3], num_labels=2)
    with pytest.raises(ValueError, match="preds contain values outside"):
        classification_metrics([-1, 1], [0, 1], num_labels=2)


def test_accepts_numpy_arrays_and_returns_python_floats() -> None:
    preds = np.array([0, 1, 1, 2])
    labels = np.array([0, 1, 2, 2])
    for value in (
        accuracy(preds, labels),
        f1_binary(preds, labels),
        f1_macro(preds, labels),
        matthews(preds, labels),
        pearson(preds.astype(float), labels.astype(float)),
        spearman(preds.astype(float), labels.astype(float)),
    ):
        assert type(value) is float


# --------------------------------------------------------------------------- regression


def test_pearson_known_value() -> None:
    # dx = (-1, 0, 1), dy = (-5/3, -2/3, 7/3): sum dx*dy = 4, sum dx^2 = 2, sum dy^2 = 78/9.
    # r = 4 / sqrt(2 * 78/9) = 12 / sqrt(156) (scipy: 0.9607689228305226).
    assert pearson([1, 2, 3], [1, 2, 5]) == pytest.approx(12 / math.sqrt(156))
    assert pearson([1, 2, 3], [1, 2, 5]) == pytest.approx(0.9607689228305226)


def test_pearson_perfect_worst_and_constant() -> None:
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert pearson([0.1, 0.1, 0.1], [1.0, 2.0, 3.0]) == 0.0
    assert pearson([1.0], [2.0]) == 0.0


def test_spearman_with_ties() -> None:
    # Average ranks: preds (1, 2.5, 2.5, 4), labels (1, 3, 2, 4); both centred on 2.5:
    # dx = (-1.5, 0, 0, 1.5), dy = (-1.5, 0.5, -0.5, 1.5); sum dx*dy = 4.5, sum dx^2 = 4.5,
    # sum dy^2 = 5 -> rho = 4.5 / sqrt(22.5) = sqrt(0.9) (scipy: 0.9486832980505139).
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505139)


def test_spearman_monotone_is_one_where_pearson_is_not() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [v**3 for v in x]
    assert spearman(x, y) == pytest.approx(1.0)
    assert pearson(x, y) < 0.99
    assert spearman(x, [-v for v in y]) == pytest.approx(-1.0)


def test_regression_metrics_combined_is_mean() -> None:
    out = regression_metrics([1, 2, 2, 3], [1, 3, 2, 4])
    assert set(out) == {"pearson", "spearman", "combined", "mse"}
    assert out["mse"] == pytest.approx((0 + 1 + 0 + 1) / 4)  # in the labels' units
    # Pearson: dx = (-1, 0, 0, 1), dy = (-1.5, 0.5, -0.5, 1.5): 3 / sqrt(2 * 5) = 3/sqrt(10).
    assert out["pearson"] == pytest.approx(3 / math.sqrt(10))
    assert out["spearman"] == pytest.approx(math.sqrt(0.9))
    assert out["combined"] == pytest.approx((out["pearson"] + out["spearman"]) / 2)


def test_regression_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        pearson([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        regression_metrics([1.0, 2.0], [1.0, float("inf")])


# --------------------------------------------------------------------------- chunks


def test_bio_spans_iob2_basic() -> None:
    tags = ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert bio_spans(tags) == {("PER", 0, 2), ("LOC", 3, 4)}


def test_bio_spans_i_after_o_starts_chunk() -> None:
    assert bio_spans(["O", "I-PER", "I-PER", "O"]) == {("PER", 1, 3)}
    assert bio_spans(["B-PER", "I-PER", "O", "I-PER"]) == {("PER", 0, 2), ("PER", 3, 4)}


def test_bio_spans_adjacent_b_tags_are_two_chunks() -> None:
    assert bio_spans(["B-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}
    # IOB1: a B- between two chunks of one type separates them.
    assert bio_spans(["I-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}


def test_bio_spans_type_switch_inside_i_run() -> None:
    assert bio_spans(["I-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 3)}
    assert bio_spans(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}


def test_bio_spans_chunk_at_end_of_sentence() -> None:
    assert bio_spans(["O", "B-LOC", "I-LOC"]) == {("LOC", 1, 3)}
    assert bio_spans(["O", "O", "B-LOC"]) == {("LOC", 2, 3)}
    assert bio_spans(["I-MISC"]) == {("MISC", 0, 1)}


def test_bio_spans_all_o() -> None:
    assert bio_spans(["O", "O"]) == set()


def test_bio_spans_bioes() -> None:
    # seqeval: E after E closes one chunk and opens another; S is a chunk on its own.
    assert bio_spans(["S-PER", "B-LOC", "E-LOC", "E-LOC"]) == {
        ("PER", 0, 1),
        ("LOC", 1, 3),
        ("LOC", 3, 4),
    }
    assert bio_spans(["B-ORG", "I-ORG", "E-ORG", "S-ORG", "O"]) == {("ORG", 0, 3), ("ORG", 3, 4)}
    assert bio_spans(["E-PER", "I-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}


def test_bio_spans_untyped_tags() -> None:
    assert bio_spans(["B", "I", "O", "I"]) == {("_", 0, 2), ("_", 3, 4)}


@pytest.mark.parametrize("bad", [["X-PER"], ["B-"], ["b-PER"], ["B-PER", "PAD"], [1]])
def test_bio_spans_rejects_unreadable_tags(bad: list[object]) -> None:
    with pytest.raises(ValueError, match="bio_spans"):
        bio_spans(bad)  # type: ignore[arg-type]


def test_bio_spans_rejects_empty_and_string() -> None:
    with pytest.raises(ValueError, match="empty"):
        bio_spans([])
    with pytest.raises(ValueError, match="not one string"):
        bio_spans("B-PER")


# --------------------------------------------------------------------------- entity scores

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]
PRED = [["B-PER", "O", "O", "B-LOC"], ["B-MISC", "B-ORG", "I-ORG"]]


def test_entity_scores_partial_span_counts_as_wrong() -> None:
    # Gold PER(0,2), LOC(3,4); pred PER(0,1), LOC(3,4). Only LOC matches: P = R = F1 = 1/2.
    out = entity_scores(PRED[:1], GOLD[:1])
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(0.5)
    assert out["f1/PER"] == 0.0
    assert out["f1/LOC"] == 1.0


def test_entity_scores_micro_over_sentences() -> None:
    # 4 predicted chunks (PER, LOC, MISC, ORG), 3 gold (PER, LOC, ORG), 2 exact matches:
    # P = 2/4, R = 2/3, F1 = 2*2 / (4 + 3) = 4/7 (seqeval: 0.5, 0.6667, 0.5714285714285715).
    out = entity_scores(PRED, GOLD)
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(4 / 7)
    per_type = {k: v for k, v in out.items() if k.startswith("f1/")}
    assert per_type == {"f1/LOC": 1.0, "f1/MISC": 0.0, "f1/ORG": 1.0, "f1/PER": 0.0}


def test_entity_scores_do_not_match_across_sentences() -> None:
    # LOC(0,1) is gold in sentence 0 and predicted in sentence 1: no match.
    out = entity_scores([["O"], ["B-LOC"]], [["B-LOC"], ["O"]])
    assert out == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "f1/LOC": 0.0}


def test_entity_scores_perfect_and_no_chunks() -> None:
    out = entity_scores(GOLD, GOLD)
    assert out["precision"] == out["recall"] == out["f1"] == 1.0
    # Nothing to divide by: 0.0, as seqeval reports with zero_division=0.
    assert entity_scores([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_entity_scores_input_errors() -> None:
    with pytest.raises(ValueError, match="number of sentences"):
        entity_scores([["O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="sentence 1 has 2 predicted tags but 1 gold"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="empty"):
        entity_scores([], [])
    with pytest.raises(ValueError, match="is a string"):
        entity_scores(["B-PER"], ["B-PER"])


def test_token_metrics() -> None:
    out = token_metrics(PRED, GOLD)
    assert out["entity_f1"] == pytest.approx(4 / 7)
    assert out["entity_precision"] == pytest.approx(0.5)
    assert out["entity_recall"] == pytest.approx(2 / 3)
    # Sentence 0: 3 of 4 tags equal (position 1 differs); sentence 1: 2 of 3 -> 5/7.
    assert out["token_accuracy"] == pytest.approx(5 / 7)
    assert out["f1/ORG"] == 1.0
    assert "f1" not in out and "precision" not in out
    assert all(type(v) is float for v in out.values())


# --------------------------------------------------------------------------- reporting


def test_mean_std() -> None:
    # Mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3.
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([0.7]) == (0.7, 0.0)
    assert all(type(v) is float for v in mean_std([1, 2]))
    with pytest.raises(ValueError, match="empty"):
        mean_std([])


# --------------------------------------------------------------------------- input errors

PAIRED = [accuracy, f1_binary, f1_macro, matthews, pearson, spearman, regression_metrics]


@pytest.mark.parametrize("fn", PAIRED, ids=lambda f: f.__name__)
def test_length_mismatch_and_empty_raise(fn: object) -> None:
    assert callable(fn)
    with pytest.raises(ValueError, match="differ in length"):
        fn([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="one-dimensional"):
        fn([[0.1, 0.9]], [1])


def test_classification_metrics_length_mismatch() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        classification_metrics([0, 1], [0], num_labels=2)


# --------------------------------------------------------------------------- properties

labels_st = st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=40)
tag_st = st.sampled_from(["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-PER"])


@st.composite
def tag_pairs(draw: st.DrawFn) -> tuple[list[list[str]], list[list[str]]]:
    lengths = draw(st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=5))
    pred = [draw(st.lists(tag_st, min_size=n, max_size=n)) for n in lengths]
    gold = [draw(st.lists(tag_st, min_size=n, max_size=n)) for n in lengths]
    return pred, gold


@settings(max_examples=100, deadline=None)
@given(labels_st)
def test_self_agreement_is_perfect(labels: list[int]) -> None:
    assert accuracy(labels, labels) == 1.0
    assert f1_macro(labels, labels) == pytest.approx(1.0)
    expected_mcc = 1.0 if len(set(labels)) > 1 else 0.0
    assert matthews(labels, labels) == pytest.approx(expected_mcc)


@settings(max_examples=100, deadline=None)
@given(labels_st, st.randoms(use_true_random=False))
def test_scores_are_bounded_and_mcc_symmetric(labels: list[int], rnd: object) -> None:
    preds = list(labels)
    rnd.shuffle(preds)  # type: ignore[attr-defined]
    assert 0.0 <= accuracy(preds, labels) <= 1.0
    assert 0.0 <= f1_macro(preds, labels) <= 1.0
    assert -1.0 <= matthews(preds, labels) <= 1.0
    assert matthews(preds, labels) == pytest.approx(matthews(labels, preds))


@settings(max_examples=100, deadline=None)
@given(tag_pairs())
def test_entity_scores_swap_pred_and_gold(pair: tuple[list[list[str]], list[list[str]]]) -> None:
    pred, gold = pair
    forward = entity_scores(pred, gold)
    backward = entity_scores(gold, pred)
    assert forward["precision"] == pytest.approx(backward["recall"])
    assert forward["recall"] == pytest.approx(backward["precision"])
    assert forward["f1"] == pytest.approx(backward["f1"])
    assert {k for k in forward if k.startswith("f1/")} == {
        k for k in backward if k.startswith("f1/")
    }


@settings(max_examples=100, deadline=None)
@given(tag_pairs())
def test_spans_lie_inside_sentence_and_do_not_overlap(
    pair: tuple[list[list[str]], list[list[str]]],
) -> None:
    for sentence in pair[0]:
        spans = sorted(bio_spans(sentence), key=lambda s: s[1])
        for _, start, end in spans:
            assert 0 <= start < end <= len(sentence)
            assert all(sentence[i] != "O" for i in range(start, end))
        for (_, _, end), (_, start, _) in itertools.pairwise(spans):
            assert end <= start


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
            st.floats(min_value=-1e3, max_value=1e3, allow_nan=False),
        ),
        min_size=2,
        max_size=30,
    )
)
def test_correlations_bounded_symmetric_and_rank_invariant(
    pairs: list[tuple[float, float]],
) -> None:
    x = [a for a, _ in pairs]
    y = [b for _, b in pairs]
    r = pearson(x, y)
    rho = spearman(x, y)
    assert -1.0 <= r <= 1.0 and -1.0 <= rho <= 1.0
    assert r == pytest.approx(pearson(y, x), abs=1e-9)
    # Scaling by a power of two is exact and keeps every rank; negation reverses them.
    assert spearman([4.0 * v for v in x], y) == pytest.approx(rho, abs=1e-9)
    assert spearman([-v for v in x], y) == pytest.approx(-rho, abs=1e-9)


# --------------------------------------------------------------------------- tasks


def test_each_task_type_ranks_by_a_metric_its_scores_report() -> None:
    from effkit.task import TASK_TYPES, metric_names, primary_metric

    for task in TASK_TYPES:
        assert primary_metric(task) in metric_names(task, num_labels=3)
    assert primary_metric("sequence-classification") == "accuracy"
    assert primary_metric("token-classification") == "entity_f1"


def test_an_unknown_task_type_names_the_closest() -> None:
    from effkit.errors import ModelError
    from effkit.task import primary_metric

    with pytest.raises(ModelError, match="did you mean 'token-classification'"):
        primary_metric("token-clasification")
