"""Metrics: GLUE-convention classification and correlation scores, entity-level F1 for tags.

Every function checks its input (same lengths, not empty, one-dimensional) and raises
``ValueError`` with a message that names the function and the problem. Results are plain Python
floats and depend only on the input.

Conventions, chosen to agree with scikit-learn, SciPy and seqeval on well-defined input:

* F1 with no positive predictions and no positive labels is 0.0 (scikit-learn's
  ``zero_division=0``); the same holds for precision, recall and F1 of entities.
* Matthews correlation, Pearson and Spearman are 0.0 where the formula divides by zero
  (a constant prediction or a constant label column).
* Chunks are read with conlleval/seqeval default (lenient) semantics: an ``I-X`` after ``O`` or
  after a chunk of another type starts a new chunk; ``E-``/``S-`` tags (BIOES) are understood.
* Tags of any other form (``NN``, ``VBD``, ``person``) are plain tags: :func:`token_metrics`
  with ``entities=False`` scores them by token accuracy and macro F1 over tags, and
  :func:`detect_scheme` tells the two kinds apart.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "accuracy",
    "bio_spans",
    "classification_metrics",
    "detect_scheme",
    "entity_scores",
    "f1_binary",
    "f1_macro",
    "matthews",
    "mean_std",
    "pearson",
    "regression_metrics",
    "scheme_problem",
    "spearman",
    "token_metrics",
]

Labels = Sequence[int] | npt.NDArray[Any]
Values = Sequence[float] | npt.NDArray[Any]
Span = tuple[str, int, int]

_CHUNK_PREFIXES = frozenset("BIES")
_UNTYPED = "_"


# --------------------------------------------------------------------------- input checks


def _as_1d(values: Any, what: str, where: str) -> npt.NDArray[Any]:
    if isinstance(values, str | bytes):
        raise ValueError(f"{where}: {what} must be a sequence of values, not a string")
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"{where}: {what} must be one-dimensional, got shape {tuple(array.shape)}"
            " (pass class ids or scores, not logits or batches)"
        )
    return array


def _pair(preds: Any, labels: Any, where: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    p = _as_1d(preds, "preds", where)
    y = _as_1d(labels, "labels", where)
    if p.shape[0] != y.shape[0]:
        raise ValueError(
            f"{where}: preds and labels differ in length ({p.shape[0]} != {y.shape[0]})"
        )
    if p.shape[0] == 0:
        raise ValueError(f"{where}: preds and labels are empty")
    return p, y


def _float_pair(
    preds: Any, labels: Any, where: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    p, y = _pair(preds, labels, where)
    try:
        pf = p.astype(np.float64)
        yf = y.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: preds and labels must be numbers ({err})") from None
    if not (np.all(np.isfinite(pf)) and np.all(np.isfinite(yf))):
        raise ValueError(f"{where}: preds and labels must be finite (found NaN or infinity)")
    return pf, yf


def _check_range(values: npt.NDArray[Any], num_labels: int, what: str, where: str) -> None:
    if num_labels < 1:
        raise ValueError(f"{where}: num_labels must be at least 1, got {num_labels}")
    bad = [v for v in np.unique(values).tolist() if not (0 <= v < num_labels) or v != int(v)]
    if bad:
        raise ValueError(
            f"{where}: {what} contain values outside 0..{num_labels - 1}: {bad[:5]}"
            f" (num_labels={num_labels})"
        )


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def _f1(tp: float, fp: float, fn: float) -> float:
    # 2PR/(P+R) rewritten without the intermediate ratios; 0.0 when nothing was positive.
    return _ratio(2.0 * tp, 2.0 * tp + fp + fn)


# --------------------------------------------------------------------------- classification


def accuracy(preds: Labels, labels: Labels) -> float:
    """Fraction of positions where the prediction equals the label."""
    p, y = _pair(preds, labels, "accuracy")
    return float(np.mean(p == y))


def f1_binary(preds: Labels, labels: Labels, positive: int = 1) -> float:
    """F1 of the class ``positive`` against everything else; 0.0 when it never occurs."""
    p, y = _pair(preds, labels, "f1_binary")
    pred_pos = p == positive
    true_pos = y == positive
    tp = int(np.sum(pred_pos & true_pos))
    fp = int(np.sum(pred_pos & ~true_pos))
    fn = int(np.sum(~pred_pos & true_pos))
    return _f1(tp, fp, fn)


def f1_macro(preds: Labels, labels: Labels, num_labels: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in ``labels`` or ``preds``.

    This is scikit-learn's ``f1_score(average="macro")`` with its default class set (the union
    of both columns). A class that is never predicted and never true does not count, even when
    ``num_labels`` is given; ``num_labels`` only checks that every value lies in
    ``0..num_labels-1``.
    """
    p, y = _pair(preds, labels, "f1_macro")
    if num_labels is not None:
        _check_range(y, num_labels, "labels", "f1_macro")
        _check_range(p, num_labels, "preds", "f1_macro")
    classes = np.unique(np.concatenate([y, p]))
    scores = []
    for c in classes.tolist():
        pred_pos = p == c
        true_pos = y == c
        tp = int(np.sum(pred_pos & true_pos))
        fp = int(np.sum(pred_pos & ~true_pos))
        fn = int(np.sum(~pred_pos & true_pos))
        scores.append(_f1(tp, fp, fn))
    return float(np.mean(scores))


def matthews(preds: Labels, labels: Labels) -> float:
    """Matthews correlation coefficient, multiclass (Gorodkin's R_K); 0.0 when undefined.

    With confusion matrix ``C`` (rows true, columns predicted), ``t = C.sum(1)``,
    ``p = C.sum(0)``, ``c = trace(C)`` and ``s = C.sum()``::

        MCC = (c*s - t.p) / sqrt((s^2 - p.p) * (s^2 - t.t))

    which is scikit-learn's ``matthews_corrcoef``; for two classes it is the usual phi
    coefficient. It is 0.0 when either column is constant.
    """
    p, y = _pair(preds, labels, "matthews")
    _, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    codes = codes.reshape(-1)
    n = y.shape[0]
    k = int(codes.max()) + 1
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (codes[:n], codes[n:]), 1.0)
    t_sum = confusion.sum(axis=1)
    p_sum = confusion.sum(axis=0)
    correct = float(np.trace(confusion))
    s = float(n)
    cov_ytyp = correct * s - float(np.dot(t_sum, p_sum))
    cov_ypyp = s * s - float(np.dot(p_sum, p_sum))
    cov_ytyt = s * s - float(np.dot(t_sum, t_sum))
    if cov_ypyp == 0.0 or cov_ytyt == 0.0:
        return 0.0
    value = cov_ytyp / math.sqrt(cov_ytyt * cov_ypyp)
    return float(min(1.0, max(-1.0, value)))


def classification_metrics(preds: Labels, labels: Labels, num_labels: int) -> dict[str, float]:
    """``accuracy``, ``f1_macro`` and ``matthews``, plus ``f1`` (class 1) for two labels."""
    p, y = _pair(preds, labels, "classification_metrics")
    _check_range(y, num_labels, "labels", "classification_metrics")
    _check_range(p, num_labels, "preds", "classification_metrics")
    out = {
        "accuracy": accuracy(p, y),
        "f1_macro": f1_macro(p, y, num_labels),
        "matthews": matthews(p, y),
    }
    if num_labels == 2:
        out["f1"] = f1_binary(p, y, positive=1)
    return out


# --------------------------------------------------------------------------- regression


def _pearson(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    # Exact equality, not a variance threshold: a constant column has no correlation, while
    # rounding in the mean of a constant column could otherwise invent one.
    if np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    dx = x - x.mean()
    dy = y - y.mean()
    denominator = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    if denominator == 0.0:
        return 0.0
    return float(min(1.0, max(-1.0, float(np.dot(dx, dy)) / denominator)))


def _average_ranks(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    new_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    bounds = np.concatenate([np.flatnonzero(new_group), [x.shape[0]]])
    group_rank = (bounds[:-1] + 1 + bounds[1:]) / 2.0
    group_of = np.cumsum(new_group) - 1
    ranks = np.empty(x.shape[0], dtype=np.float64)
    ranks[order] = group_rank[group_of]
    return ranks


def pearson(preds: Values, labels: Values) -> float:
    """Pearson correlation; 0.0 when either column is constant."""
    p, y = _float_pair(preds, labels, "pearson")
    return _pearson(p, y)


def spearman(preds: Values, labels: Values) -> float:
    """Spearman rank correlation (Pearson of average ranks); 0.0 when either column is constant."""
    p, y = _float_pair(preds, labels, "spearman")
    return _pearson(_average_ranks(p), _average_ranks(y))


def regression_metrics(preds: Values, labels: Values) -> dict[str, float]:
    """``pearson``, ``spearman``, GLUE STS-B's ``combined`` (the mean of the two) and ``mse``,
    the mean squared error in the labels' units (lower is better)."""
    p, y = _float_pair(preds, labels, "regression_metrics")
    r = _pearson(p, y)
    rho = _pearson(_average_ranks(p), _average_ranks(y))
    mse = float(np.mean((p - y) ** 2))
    return {"pearson": r, "spearman": rho, "combined": (r + rho) / 2.0, "mse": mse}


# --------------------------------------------------------------------------- tags and entities


def _parse_tag(tag: Any, position: int, where: str) -> tuple[str, str]:
    if not isinstance(tag, str):
        raise ValueError(f"{where}: tag at position {position} is {tag!r}, expected a string")
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if prefix in _CHUNK_PREFIXES and (not sep or kind):
        return prefix, kind or _UNTYPED
    raise ValueError(
        f"{where}: cannot read tag {tag!r} at position {position}"
        " (expected 'O' or B-/I-/E-/S- followed by a type, e.g. 'B-PER')"
    )


def tag_problem(tag: Any) -> str | None:
    """Why ``tag`` is not an entity tag the entity metrics can read, or None."""
    try:
        _parse_tag(tag, 0, "tag")
    except ValueError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


_SCHEME_PREFIXES = {"bio": frozenset("BI"), "iob1": frozenset("BI"), "bioes": frozenset("BIES")}


def scheme_problem(tag: Any, scheme: str) -> str | None:
    """Why ``tag`` is not a tag of the entity ``scheme`` (``bio``, ``bioes``, ``iob1``), or None.

    BIO and IOB1 tags are ``O``, ``B-X`` and ``I-X`` (they differ in where ``B-`` is used, which
    the lenient chunk reading accepts either way); BIOES adds ``E-X`` and ``S-X``.
    """
    if scheme not in _SCHEME_PREFIXES:
        raise ValueError(f"scheme_problem: unknown entity scheme {scheme!r}")
    problem = tag_problem(tag)
    if problem is not None:
        return problem
    prefix = str(tag).partition("-")[0]
    if tag != "O" and prefix not in _SCHEME_PREFIXES[scheme]:
        allowed = "/".join(sorted(_SCHEME_PREFIXES[scheme], key="BIES".index))
        return f"'{prefix}-' is not a {scheme.upper()} prefix (expected O or {allowed}-)"
    return None


def detect_scheme(tags: Sequence[str]) -> str | None:
    """The entity scheme a tag set follows, or None when some tag is not an entity tag.

    ``bioes`` when an ``E-`` or ``S-`` tag occurs, else ``bio``. A set of ``O`` alone, or one
    without ``O``, is not taken for entity tags: entity tag sets mark the outside with ``O``.
    """
    names = [str(t) for t in tags]
    if not names or "O" not in names or len(set(names)) < 2:
        return None
    if any(tag_problem(t) is not None for t in names):
        return None
    prefixes = {t.partition("-")[0] for t in names if t != "O"}
    return "bioes" if prefixes & {"E", "S"} else "bio"


def _spans(tags: Sequence[str], where: str) -> set[Span]:
    """Chunks of one sentence, with seqeval's start/end rules; the empty sentence has none."""
    if isinstance(tags, str | bytes):
        raise ValueError(f"{where}: tags must be a sequence of tag strings, not one string")
    spans: set[Span] = set()
    prev_tag, prev_type, start = "O", "", 0
    parsed = [_parse_tag(t, i, where) for i, t in enumerate(tags)]
    for i, (tag, kind) in enumerate([*parsed, ("O", "")]):
        ends = (
            prev_tag in ("E", "S")
            or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
            or (prev_tag != "O" and prev_type != kind)
        )
        starts = (
            tag in ("B", "S")
            or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
            or (tag != "O" and prev_type != kind)
        )
        if ends:
            spans.add((prev_type, start, i))
        if starts:
            start = i
        prev_tag, prev_type = tag, kind
    return spans


def bio_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Chunks of one tagged sentence as ``(type, start, end_exclusive)``.

    Accepts IOB1, IOB2 and BIOES tags (``B-X``, ``I-X``, ``E-X``, ``S-X``, ``O``) read the way
    conlleval and seqeval do by default: ``I-X`` after ``O`` or after a chunk of another type
    opens a new chunk; ``B-X`` always opens one; a change of type inside an ``I-`` run closes
    the chunk. A tag without a type (``B``) gets the type ``"_"``.
    """
    if not isinstance(tags, str | bytes) and len(tags) == 0:
        raise ValueError("bio_spans: tags are empty")
    return _spans(tags, "bio_spans")


def _sentence_pairs(
    pred_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]], where: str
) -> list[tuple[Sequence[str], Sequence[str]]]:
    for name, value in (("pred_tags", pred_tags), ("gold_tags", gold_tags)):
        if isinstance(value, str | bytes):
            raise ValueError(f"{where}: {name} must be a list of sentences, not a string")
    if len(pred_tags) != len(gold_tags):
        raise ValueError(
            f"{where}: pred_tags and gold_tags differ in number of sentences"
            f" ({len(pred_tags)} != {len(gold_tags)})"
        )
    if len(gold_tags) == 0:
        raise ValueError(f"{where}: pred_tags and gold_tags are empty")
    pairs = []
    for i, (pred, gold) in enumerate(zip(pred_tags, gold_tags, strict=True)):
        if isinstance(pred, str | bytes) or isinstance(gold, str | bytes):
            raise ValueError(
                f"{where}: sentence {i} is a string; pass one list of tags per sentence"
            )
        if len(pred) != len(gold):
            raise ValueError(
                f"{where}: sentence {i} has {len(pred)} predicted tags but {len(gold)} gold tags"
            )
        pairs.append((pred, gold))
    if not any(len(gold) for _, gold in pairs):
        raise ValueError(f"{where}: every sentence is empty")
    return pairs


def _entity_scores(
    pairs: list[tuple[Sequence[str], Sequence[str]]], where: str
) -> dict[str, float]:
    tp: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    for pred, gold in pairs:
        pred_spans = _spans(pred, where)
        gold_spans = _spans(gold, where)
        tp.update(kind for kind, _, _ in pred_spans & gold_spans)
        n_pred.update(kind for kind, _, _ in pred_spans)
        n_gold.update(kind for kind, _, _ in gold_spans)
    total_tp = sum(tp.values())
    total_pred = sum(n_pred.values())
    total_gold = sum(n_gold.values())
    out = {
        "precision": _ratio(total_tp, total_pred),
        "recall": _ratio(total_tp, total_gold),
        "f1": _f1(total_tp, total_pred - total_tp, total_gold - total_tp),
    }
    for kind in sorted(set(n_pred) | set(n_gold)):
        out[f"f1/{kind}"] = _f1(tp[kind], n_pred[kind] - tp[kind], n_gold[kind] - tp[kind])
    return out


def entity_scores(
    pred_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Micro ``precision``, ``recall`` and ``f1`` of exact chunk matches, plus ``f1/<type>``.

    A predicted chunk counts only when its type, start and end all equal a gold chunk's in the
    same sentence; a partial overlap is both a false positive and a false negative. Per-type
    keys cover every type that occurs in either side. Scores are 0.0 when there is nothing to
    divide by (no predicted or no gold chunks), as in seqeval.
    """
    pairs = _sentence_pairs(pred_tags, gold_tags, "entity_scores")
    return _entity_scores(pairs, "entity_scores")


def token_metrics(
    pred_tags: Sequence[Sequence[str]],
    gold_tags: Sequence[Sequence[str]],
    *,
    entities: bool = True,
) -> dict[str, float]:
    """Token scores, and entity scores when the tags are entity tags.

    Always: ``token_accuracy`` (the fraction of tokens whose predicted tag equals the gold tag,
    over all sentences) and ``token_f1_macro`` (the unweighted mean of per-tag F1 over the tags
    that occur in either side, as :func:`f1_macro`). With ``entities`` (BIO/BIOES/IOB1 tags):
    ``entity_f1``, ``entity_precision``, ``entity_recall`` and ``f1/<type>`` from
    :func:`entity_scores`. Without it, any strings are tags, and ``f1/<tag>`` gives each tag's
    token-level F1.
    """
    pairs = _sentence_pairs(pred_tags, gold_tags, "token_metrics")
    flat_pred = [str(p) for pred, _ in pairs for p in pred]
    flat_gold = [str(g) for _, gold in pairs for g in gold]
    names = sorted(set(flat_gold) | set(flat_pred))
    code = {name: i for i, name in enumerate(names)}
    p = np.array([code[t] for t in flat_pred])
    y = np.array([code[t] for t in flat_gold])
    out: dict[str, float] = {}
    if entities:
        scores = _entity_scores(pairs, "token_metrics")
        out = {
            "entity_f1": scores.pop("f1"),
            "entity_precision": scores.pop("precision"),
            "entity_recall": scores.pop("recall"),
        }
    out["token_accuracy"] = float(np.mean(p == y))
    out["token_f1_macro"] = f1_macro(p, y)
    if entities:
        out.update(scores)
    else:
        for name in names:
            c = code[name]
            tp = int(np.sum((p == c) & (y == c)))
            out[f"f1/{name}"] = _f1(tp, int(np.sum(p == c)) - tp, int(np.sum(y == c)) - tp)
    return out


# --------------------------------------------------------------------------- reporting


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of ``values``; the std of one value is 0.0."""
    array = _as_1d(values, "values", "mean_std")
    if array.shape[0] == 0:
        raise ValueError("mean_std: values are empty")
    try:
        data = array.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"mean_std: values must be numbers ({err})") from None
    if not np.all(np.isfinite(data)):
        raise ValueError("mean_std: values must be finite (found NaN or infinity)")
    mean = float(np.mean(data))
    std = float(np.std(data, ddof=1)) if data.shape[0] > 1 else 0.0
    return mean, std
