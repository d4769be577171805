"""Folding a round as it is decided gives the very bytes of aggregating the list at close.

The service folds each accepted update into ``RoundFold`` when it is decided and drops its tensors;
the audit replay calls ``aggregate_version`` with the list in the version's order. Both must give the
same version bytes (weights and server state), for every folding strategy, under central DP, with
FedBuff's per-update bases and staleness weights, and over several rounds of server-optimizer state.
Versions published before folding (updates listed and folded in ``(domain, update_id)`` order) must
still replay.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from governance.policies import dp_mean_delta, noise_key
from governance.round_fold import RoundFold, streams, task_strategy
from governance.rounds import aggregate_version, initial_version
from governance.strategies import STRATEGIES, ClientUpdate
from meshfl.events import FederationMode, PrivacyPolicy, RoundPolicy, StrategySpec
from meshfl.tensors import from_wire, tensors_sha256
from tests.audit.audit_builders import SECRET, make_task, perturbed

FOLDING = ["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedbuff"]
PARAMS = {"fedavgm": {"server_momentum": 0.9, "server_learning_rate": 0.7}, "fedbuff": {}}


def _updates(weights, n: int, *, seed: int, bases=None) -> list[ClientUpdate]:
    return [
        ClientUpdate(
            f"u{seed}-{i}",
            f"d{(7 * i) % n}",  # decision order is not the (domain, id) order
            perturbed(weights, seed=seed + i, scale=0.3),
            num_examples=17 + 31 * i,
            staleness=0 if bases is None else i % 3,
            base=None if bases is None else bases[i % 3],
        )
        for i in range(n)
    ]


def _folded(task, parent, weights, state, updates, secret=b""):
    fold = RoundFold(task, weights)
    for update in updates:
        fold.add(update)
    return aggregate_version(
        task, parent, weights, state, fold, created_at=parent.created_at, dp_secret=secret
    )


def _same(a, b) -> None:
    assert a.sha256 == b.sha256
    assert tensors_sha256(a.server_state) == tensors_sha256(b.server_state)
    assert a.contributing_updates == b.contributing_updates


@pytest.mark.parametrize("name", FOLDING)
def test_folding_as_decided_gives_the_bytes_of_the_list_over_rounds(name: str) -> None:
    task = make_task(strategy=StrategySpec(name=name, params=PARAMS.get(name, {})))
    assert streams(task_strategy(task))
    parent = initial_version(task)
    weights, state = from_wire(parent.tensors), {}
    for round_ in range(3):  # server optimizers carry state from round to round
        updates = _updates(weights, 5, seed=100 * round_)
        streamed = _folded(task, parent, weights, state, updates)
        listed = aggregate_version(task, parent, weights, state, updates, created_at=parent.created_at)
        _same(streamed, listed)
        assert streamed.contributing_updates == [u.update_id for u in updates]  # in fold order
        assert streamed.metrics["num_examples"] == sum(u.num_examples for u in updates)
        parent, weights, state = streamed, from_wire(streamed.tensors), from_wire(streamed.server_state)


def test_fedbuff_folds_each_delta_against_its_own_base_with_its_staleness_weight() -> None:
    task = make_task(
        strategy=StrategySpec(name="fedbuff", params={"server_learning_rate": 0.8}),
        mode=FederationMode.ASYNC,
        round_policy=RoundPolicy(min_domains=1, buffer_size=6, max_staleness=3, staleness_alpha=0.5),
    )
    parent = initial_version(task)
    weights = from_wire(parent.tensors)
    bases = [weights, perturbed(weights, seed=1, scale=0.2), perturbed(weights, seed=2, scale=0.2)]
    updates = _updates(weights, 6, seed=7, bases=bases)
    streamed = _folded(task, parent, weights, {}, updates)
    _same(streamed, aggregate_version(task, parent, weights, {}, updates, created_at=parent.created_at))
    # and it is FedBuff's rule: the (1 + s)^-1/2 * n weighted mean of w_i - b_i, stepped by 0.8
    alpha = [(1 + u.staleness) ** -0.5 * u.num_examples for u in updates]
    got = from_wire(streamed.tensors)
    for name, ref in weights.items():
        step = sum(
            a * (u.weights[name].double() - u.base[name].double())
            for a, u in zip(alpha, updates, strict=True)
        )
        expected = ref.double() + 0.8 * step / sum(alpha)
        assert torch.allclose(got[name].double(), expected, rtol=0, atol=1e-6)


def test_central_dp_folds_the_clipped_deltas_as_decided() -> None:
    privacy = PrivacyPolicy(clip_norm=0.5, noise_multiplier=1.0)
    task = make_task(privacy=privacy, strategy=StrategySpec(name="fedadam"))
    parent = initial_version(task)
    weights = from_wire(parent.tensors)
    updates = _updates(weights, 4, seed=3)
    streamed = _folded(task, parent, weights, {}, updates, SECRET)
    listed = aggregate_version(
        task, parent, weights, {}, updates, created_at=parent.created_at, dp_secret=SECRET
    )
    _same(streamed, listed)
    # the mechanism itself, over the same order: noised mean of clipped deltas, then FedAdam's step
    key = noise_key(
        SECRET,
        task_id=task.id,
        version=1,
        parent_sha256=parent.sha256,
        update_ids=[u.update_id for u in updates],
    )
    mean = dp_mean_delta(weights, (u.weights for u in updates), clip_norm=0.5, noise_multiplier=1.0, key=key)
    means = {k: mean[k].add_(weights[k].double()) for k in weights}
    expected = task_strategy(task).server_step(weights, means, None)
    got = from_wire(streamed.tensors)
    assert all(torch.equal(got[k], expected.weights[k]) for k in weights)


def test_versions_listed_in_the_old_canonical_order_still_replay() -> None:
    """Before folding, the service sorted by (domain, update_id) and the strategy aggregated that list:
    the replay, which folds in the listed order, gives those bytes again."""
    task = make_task(strategy=StrategySpec(name="fedavgm", params=PARAMS["fedavgm"]))
    parent = initial_version(task)
    weights = from_wire(parent.tensors)
    ordered = sorted(_updates(weights, 5, seed=9), key=lambda u: u.key)
    old = task_strategy(task).aggregate(ordered, weights, None)  # what the service published then
    replayed = aggregate_version(task, parent, weights, {}, ordered, created_at=parent.created_at)
    assert all(torch.equal(from_wire(replayed.tensors)[k], old.weights[k]) for k in weights)


def test_a_folded_update_is_released_and_the_fold_holds_only_the_sums() -> None:
    task = make_task()
    parent = initial_version(task)
    weights = from_wire(parent.tensors)
    fold = RoundFold(task, weights)
    refs = []
    for update in _updates(weights, 4, seed=5):
        refs.extend(weakref.ref(t) for t in update.weights.values())
        fold.add(update)
        del update
    gc.collect()
    assert all(ref() is None for ref in refs), "the fold kept a reference to an update's tensors"
    parameters = sum(t.numel() for t in weights.values())
    assert 8 * parameters <= fold.held_bytes() <= 8 * parameters + 8 * (1 << 18)
    with pytest.raises(ValueError, match="duplicate"):
        again = _updates(weights, 1, seed=5)[0]
        fold.add(again)


@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - set(FOLDING)))
def test_rules_that_need_every_update_do_not_fold(name: str) -> None:
    task = make_task(strategy=StrategySpec(name=name))
    assert not streams(task_strategy(task))
    with pytest.raises(ValueError, match="does not fold"):
        RoundFold(task, from_wire(initial_version(task).tensors))


class _CountingList(list):
    """A pending list that counts the items read, to show a decision reads only the unfolded tail."""

    reads = 0

    def __getitem__(self, index):
        type(self).reads += 1
        return super().__getitem__(index)


def test_a_decision_reads_only_the_unfolded_tail_of_the_round() -> None:
    from governance.rounds import PendingUpdate, unfolded_start

    def item(i: int, held: bool) -> PendingUpdate:
        return PendingUpdate(f"u{i}", f"d{i}", 1, 0, {"w": torch.zeros(1)} if held else None, 0, i)

    pending = _CountingList(
        [item(i, held=False) for i in range(1000)] + [item(1000 + i, True) for i in range(2)]
    )
    assert unfolded_start(pending) == 1000
    assert _CountingList.reads <= 3  # the two held updates and the folded one before them, not 1,000
    assert unfolded_start([]) == 0 and unfolded_start([item(0, True)]) == 0
