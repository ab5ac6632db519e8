"""CSD's co-occurrence matrix and paste-class sampling on a hand-made label set."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.csd.cooccurrence import (
    PasteClassSampler,
    cooccurrence_counts,
    cooccurrence_prior,
    paste_class_distribution,
)

# 3 classes. Single-label: a, b (class 1), f (class 3); multi-label: c, d (2+3), e (1+3), g (1+2+3).
LABELS = {"a": [1], "b": [1], "c": [2, 3], "d": [3, 2], "e": [1, 3], "f": [3], "g": [1, 2, 3]}


def test_counts_start_at_one_pairs_symmetric_singles_on_diagonal():
    expected = np.array([[1 + 2, 1 + 1, 1 + 2],
                         [1 + 1, 1, 1 + 3],
                         [1 + 2, 1 + 3, 1 + 1]])
    np.testing.assert_array_equal(cooccurrence_counts(LABELS.values(), 3), expected)


def test_prior_is_rowwise_softmax_with_temperature():
    counts = cooccurrence_counts(LABELS.values(), 3)
    prior = cooccurrence_prior(counts, 0.1)
    e = np.exp(0.1 * counts)
    np.testing.assert_allclose(prior, e / e.sum(1, keepdims=True))
    np.testing.assert_allclose(prior.sum(1), 1)
    # a higher count gets a higher share within its row; a lower temperature flattens rows
    assert prior[1, 2] > prior[1, 0] > prior[1, 1] - 1e-12
    assert np.ptp(cooccurrence_prior(counts, 0.01), axis=1).max() < np.ptp(prior, axis=1).max()


def test_paste_class_distribution_sums_rows_of_target_classes():
    prior = cooccurrence_prior(cooccurrence_counts(LABELS.values(), 3), 0.1)
    p = paste_class_distribution(prior, [2, 3])
    np.testing.assert_allclose(p, (prior[1] + prior[2]) / 2)
    # classes without a source image are removed and the rest renormalised
    avail = np.array([True, False, True])
    q = paste_class_distribution(prior, [2, 3], avail)
    assert q[1] == 0 and q.sum() == pytest.approx(1)
    np.testing.assert_allclose(q[[0, 2]], p[[0, 2]] / p[[0, 2]].sum())
    # a target without classes: uniform over the available classes
    np.testing.assert_allclose(paste_class_distribution(prior, [], avail), [0.5, 0, 0.5])


def test_sampler_draws_classes_by_the_prior_and_single_label_sources():
    sampler = PasteClassSampler(LABELS, 3, 0.1)
    assert sampler.by_class == {1: ["a", "b"], 2: [], 3: ["f"]}
    expected = sampler.distribution([2, 3])
    assert expected[1] == 0
    rng = np.random.default_rng(0)
    draws = [sampler.sample([2, 3], rng) for _ in range(20000)]
    freq = np.bincount([c - 1 for c, _ in draws], minlength=3) / len(draws)
    np.testing.assert_allclose(freq, expected, atol=0.01)
    for c, source in draws[:200]:
        assert LABELS[source] == [c]
    sources_of_1 = {s for c, s in draws if c == 1}
    assert sources_of_1 == {"a", "b"}


def test_sampler_without_single_label_images_fails():
    with pytest.raises(ValueError, match="single-label"):
        PasteClassSampler({"x": [1, 2]}, 2, 0.1)
