"""The metadata checks: known domain, admission, data contract, task and round, duplicate, min examples."""

from __future__ import annotations

from policy_builders import make_candidate, make_ctx, make_product, make_task

from governance.policies import (
    Admission,
    DataContract,
    Duplicate,
    KnownDomain,
    MinExamples,
    TaskAndRound,
)
from meshfl.events import (
    AdmissionPolicy,
    Column,
    DataProductRef,
    DataProductStatus,
    FederationMode,
    RoundPolicy,
    UpdateChecks,
)

# --- known domain -------------------------------------------------------------------------------


def test_known_domain_accepts_a_domain_with_a_product() -> None:
    ctx = make_ctx()
    verdict = KnownDomain().evaluate(make_candidate(ctx), ctx)
    assert verdict.accepted
    assert verdict.policy == "known_domain"


def test_known_domain_rejects_an_unregistered_domain() -> None:
    ctx = make_ctx()
    verdict = KnownDomain().evaluate(make_candidate(ctx, domain="rogue"), ctx)
    assert not verdict.accepted
    assert verdict.policy == "known_domain"
    assert "'rogue'" in verdict.reason


def test_known_domain_rejects_a_domain_with_an_empty_product_list() -> None:
    ctx = make_ctx(catalog={"sales": []})
    assert not KnownDomain().evaluate(make_candidate(ctx), ctx).accepted


# --- admission ----------------------------------------------------------------------------------


def test_admission_accepts_by_default() -> None:
    ctx = make_ctx()
    assert Admission().evaluate(make_candidate(ctx), ctx).accepted


def test_admission_rejects_a_suspended_domain_even_if_allowed() -> None:
    task = make_task(admission=AdmissionPolicy(allowed_domains=["sales"], suspended_domains=["sales"]))
    ctx = make_ctx(task)
    verdict = Admission().evaluate(make_candidate(ctx), ctx)
    assert not verdict.accepted
    assert "suspended" in verdict.reason and "'sales'" in verdict.reason


def test_admission_enforces_the_allow_list() -> None:
    task = make_task(admission=AdmissionPolicy(allowed_domains=["ops", "hr"]))
    ctx = make_ctx(task)
    rejected = Admission().evaluate(make_candidate(ctx, domain="sales"), ctx)
    assert not rejected.accepted
    assert "not among the allowed domains (hr, ops)" in rejected.reason
    assert Admission().evaluate(make_candidate(ctx, domain="ops"), ctx).accepted


def test_admission_requires_tags_on_a_serving_product() -> None:
    task = make_task(admission=AdmissionPolicy(required_tags=["gdpr-reviewed", "pii-free"]))
    partly = make_product("sales", tags=["gdpr-reviewed"])
    ctx = make_ctx(task, catalog={"sales": [partly]})
    verdict = Admission().evaluate(make_candidate(ctx), ctx)
    assert not verdict.accepted
    assert "sales.customers lacks ['pii-free']" in verdict.reason

    tagged = make_product("sales", tags=["pii-free", "gdpr-reviewed", "extra"])
    ctx = make_ctx(task, catalog={"sales": [partly, tagged]})
    assert Admission().evaluate(make_candidate(ctx), ctx).accepted


def test_admission_ignores_tags_on_a_product_that_cannot_serve_the_task() -> None:
    task = make_task(admission=AdmissionPolicy(required_tags=["gdpr-reviewed"]))
    useless = make_product("sales", tags=["gdpr-reviewed"], columns=[Column(name="age", logical_type="int")])
    ctx = make_ctx(task, catalog={"sales": [useless]})
    verdict = Admission().evaluate(make_candidate(ctx), ctx)
    assert not verdict.accepted
    assert "no product serving task 'churn-v1'" in verdict.reason


# --- data contract ------------------------------------------------------------------------------


def test_data_contract_accepts_a_registered_serving_product() -> None:
    ctx = make_ctx()
    verdict = DataContract().evaluate(make_candidate(ctx), ctx)
    assert verdict.accepted, verdict.reason
    assert "sales.customers@1.0.0" in verdict.reason


def test_data_contract_accepts_numeric_types_case_insensitively() -> None:
    columns = [
        Column(name="age", logical_type="LONG"),
        Column(name="income", logical_type="Double"),
        Column(name="churn", logical_type="int"),
    ]
    ctx = make_ctx(catalog={"sales": [make_product("sales", columns=columns)]})
    assert DataContract().evaluate(make_candidate(ctx), ctx).accepted


def test_data_contract_names_missing_and_non_numeric_columns() -> None:
    columns = [Column(name="age", logical_type="string"), Column(name="churn", logical_type="boolean")]
    ctx = make_ctx(catalog={"sales": [make_product("sales", columns=columns)]})
    verdict = DataContract().evaluate(make_candidate(ctx), ctx)
    assert not verdict.accepted
    assert verdict.policy == "data_contract"
    assert "missing columns income" in verdict.reason
    assert "non-numeric columns age:string, churn:boolean" in verdict.reason


def test_data_contract_rejects_a_product_that_is_not_active() -> None:
    ctx = make_ctx(catalog={"sales": [make_product("sales", status=DataProductStatus.DEPRECATED)]})
    verdict = DataContract().evaluate(make_candidate(ctx), ctx)
    assert not verdict.accepted
    assert "status is deprecated, not active" in verdict.reason


def test_data_contract_requires_the_exact_registered_version() -> None:
    ctx = make_ctx(catalog={"sales": [make_product("sales", version="2.0.0")]})
    stale = [DataProductRef(id="sales.customers", version="1.0.0")]
    verdict = DataContract().evaluate(make_candidate(ctx, data_products=stale), ctx)
    assert not verdict.accepted
    assert "sales.customers@1.0.0 is not in the catalog (registered versions: 2.0.0)" in verdict.reason


def test_data_contract_rejects_another_domains_product_and_no_refs() -> None:
    ctx = make_ctx()
    foreign = [DataProductRef(id="ops.customers", version="1.0.0")]
    verdict = DataContract().evaluate(make_candidate(ctx, data_products=foreign), ctx)
    assert not verdict.accepted
    assert "ops.customers@1.0.0 is not in the catalog (not registered)" in verdict.reason
    none = DataContract().evaluate(make_candidate(ctx, data_products=[]), ctx)
    assert not none.accepted
    assert "names no data product" in none.reason


def test_data_contract_requires_every_named_product_to_serve() -> None:
    other = make_product("sales", id="sales.leads", columns=[Column(name="age", logical_type="integer")])
    ctx = make_ctx(catalog={"sales": [make_product("sales"), other]})
    refs = [
        DataProductRef(id="sales.customers", version="1.0.0"),
        DataProductRef(id="sales.leads", version="1.0.0"),
    ]
    verdict = DataContract().evaluate(make_candidate(ctx, data_products=refs), ctx)
    assert not verdict.accepted
    assert "sales.leads@1.0.0: missing columns income, churn" in verdict.reason
    assert "sales.customers" not in verdict.reason


# --- task and round -----------------------------------------------------------------------------


def test_task_and_round_accepts_the_open_round_from_the_latest_version() -> None:
    ctx = make_ctx(open_round=3, latest_version=2)
    assert TaskAndRound().evaluate(make_candidate(ctx, round=3, base_version=2), ctx).accepted


def test_task_and_round_rejects_wrong_task_round_or_base() -> None:
    ctx = make_ctx(open_round=3, latest_version=2)
    wrong_task = TaskAndRound().evaluate(make_candidate(ctx, task_id="other", round=3, base_version=2), ctx)
    assert not wrong_task.accepted and "'other'" in wrong_task.reason
    old_round = TaskAndRound().evaluate(make_candidate(ctx, round=2, base_version=2), ctx)
    assert not old_round.accepted
    assert "round 2, the open round is 3" in old_round.reason
    old_base = TaskAndRound().evaluate(make_candidate(ctx, round=3, base_version=1), ctx)
    assert not old_base.accepted
    assert "version 1, the latest version is 2" in old_base.reason


def test_task_and_round_async_bounds_staleness() -> None:
    task = make_task(mode=FederationMode.ASYNC, round_policy=RoundPolicy(max_staleness=2))
    ctx = make_ctx(task, open_round=9, latest_version=10)
    fresh = TaskAndRound().evaluate(make_candidate(ctx, round=4, base_version=8), ctx)
    assert fresh.accepted
    assert "staleness 2 within max_staleness 2" in fresh.reason
    stale = TaskAndRound().evaluate(make_candidate(ctx, round=4, base_version=7), ctx)
    assert not stale.accepted
    assert "staleness 3" in stale.reason and "max_staleness 2" in stale.reason
    future = TaskAndRound().evaluate(make_candidate(ctx, base_version=11), ctx)
    assert not future.accepted
    assert "ahead of the latest version 10" in future.reason


# --- duplicate ----------------------------------------------------------------------------------


def test_duplicate_rejects_a_decided_update_id() -> None:
    ctx = make_ctx(decided_update_ids=frozenset({"u-1"}))
    verdict = Duplicate().evaluate(make_candidate(ctx), ctx)
    assert not verdict.accepted
    assert "'u-1' was already decided" in verdict.reason
    assert Duplicate().evaluate(make_candidate(ctx, update_id="u-2"), ctx).accepted


def test_duplicate_allows_one_accepted_update_per_domain_and_round_in_sync_mode() -> None:
    ctx = make_ctx(accepted_domains_this_round=frozenset({"sales"}), open_round=4)
    verdict = Duplicate().evaluate(make_candidate(ctx, update_id="u-9"), ctx)
    assert not verdict.accepted
    assert "'sales' already has an accepted update in round 4" in verdict.reason
    assert Duplicate().evaluate(make_candidate(ctx, update_id="u-9", domain="ops"), ctx).accepted


def test_duplicate_lets_a_domain_contribute_again_in_async_mode() -> None:
    task = make_task(mode=FederationMode.ASYNC)
    ctx = make_ctx(task, accepted_domains_this_round=frozenset({"sales"}))
    assert Duplicate().evaluate(make_candidate(ctx, update_id="u-9"), ctx).accepted


# --- min examples -------------------------------------------------------------------------------


def test_min_examples_accepts_enough_and_rejects_too_few() -> None:
    ctx = make_ctx(make_task(update_checks=UpdateChecks(min_examples=100)))
    assert MinExamples().evaluate(make_candidate(ctx, num_examples=100), ctx).accepted
    few = MinExamples().evaluate(make_candidate(ctx, num_examples=99), ctx)
    assert not few.accepted
    assert "99 is below the minimum 100" in few.reason


def test_min_examples_rejects_absurd_counts() -> None:
    ctx = make_ctx(make_task(update_checks=UpdateChecks(min_examples=0)))
    for count in (0, -5):
        verdict = MinExamples().evaluate(make_candidate(ctx, num_examples=count), ctx)
        assert not verdict.accepted
        assert f"{count} is not a positive count" in verdict.reason


def test_min_examples_rejects_more_examples_than_the_products_hold() -> None:
    ctx = make_ctx(make_task(local_epochs=2))
    assert MinExamples().evaluate(make_candidate(ctx, num_examples=2000), ctx).accepted
    verdict = MinExamples().evaluate(make_candidate(ctx, num_examples=2001), ctx)
    assert not verdict.accepted
    assert "1000 rows x 2 epoch(s) = 2000" in verdict.reason


def test_min_examples_skips_the_ceiling_when_rows_are_unknown() -> None:
    ctx = make_ctx(catalog={"sales": [make_product("sales", num_rows=None)]})
    assert MinExamples().evaluate(make_candidate(ctx, num_examples=10**9), ctx).accepted
