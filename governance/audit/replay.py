"""Audit replay: recompute every global version of a task from the log and compare the SHA-256s.

The replay trusts nothing the governance service wrote about weights: it takes the task, the update
messages that the decisions accepted (by the partition/offset the decision names, so a forged copy
re-published under the same ``update_id`` is never picked up), re-applies the transforming policies
(norm clip, DP clip) with the same policy code, and calls ``governance.rounds.aggregate_version``, the
very function the service used. Version 0 is recomputed from the task's seed. Each version is also
checked against its own tensors (a stored version rewritten in place) and for lineage (parent is the
previous version, every contributing update was accepted for this task).

When a version does not reproduce, the next one is tried from the recomputed parent and, failing
that, from the published one: a forged update then marks only its own version, a rewritten stored
version only itself. Before any of that, every event's signature is checked against governance's
pinned key and the domain keys it registered (``governance.audit.signatures``): forged events are
findings and take no part. ``replay`` is pure; reading the bus or a file is done by the caller.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.audit.log import LoggedEvent, TaskLog
from governance.audit.log_findings import budget_findings, leftover_findings, log_findings
from governance.audit.result import Finding, ProgressCallback, ReplayResult, Severity, VersionCheck
from governance.audit.signatures import check_signatures
from governance.audit.transforms import reapply_transforms
from governance.policies import check_secret, dp_config_problems
from governance.rounds import aggregate_version, initial_version
from governance.strategies import ClientUpdate
from meshfl.errors import ReplayError, TensorCodecError
from meshfl.events import FederationMode, ModelUpdate, ModelVersion
from meshfl.logs import get_logger
from meshfl.tensors import from_wire, tensors_sha256

log = get_logger("meshfl.audit.replay")


class _Replayer:
    """One pass over a ``TaskLog``; collects findings as it goes."""

    def __init__(self, index: TaskLog, dp_secret: bytes) -> None:
        self.index = index
        self.dp_secret = dp_secret
        self.task = index.task
        self.findings: list[Finding] = []
        self._bases: dict[int, Mapping[str, torch.Tensor] | None] = {}

    def find(self, severity: Severity, kind: str, message: str, **where: object) -> str:
        self.findings.append(Finding(severity=severity, kind=kind, message=message, **where))  # type: ignore[arg-type]
        return message

    def client_updates(
        self, version: ModelVersion, parent: ModelVersion, parent_weights: Mapping[str, torch.Tensor]
    ) -> tuple[list[ClientUpdate], list[str]]:
        updates: list[ClientUpdate] = []
        problems: list[str] = []
        for update_id in version.contributing_updates:
            found, trouble = self.index.accepted_update(update_id)
            for message in trouble:
                problems.append(
                    self.find("error", "lineage", message, version=version.version, update_id=update_id)
                )
            if found is None:
                continue
            update = found.event
            assert isinstance(update, ModelUpdate)
            where = {
                "version": version.version,
                "update_id": update_id,
                "partition": found.partition,
                "offset": found.offset,
            }
            staleness = parent.version - update.base_version
            if staleness < 0:
                problems.append(
                    self.find(
                        "error",
                        "lineage",
                        f"update {update_id} trained on version {update.base_version}, "
                        f"after parent {parent.version}",
                        **where,
                    )
                )
                continue
            base = None
            if self.task.mode == FederationMode.ASYNC:  # FedBuff: the delta against the update's own base
                base = parent_weights if staleness == 0 else self.published_weights(update.base_version)
                if base is None:
                    problems.append(
                        self.find(
                            "error",
                            "lineage",
                            f"update {update_id} trained on version {update.base_version}, "
                            "which is not on the log",
                            **where,
                        )
                    )
                    continue
            try:
                weights = from_wire(update.tensors, copy=False)  # read only, as in the service
                # the clips measure the delta as the service did: against the parent, or in async mode
                # against the update's own base (governance.rounds.TaskState.reference_weights)
                final, refused = reapply_transforms(
                    self.task, weights, parent_weights if base is None else base
                )
            except (TensorCodecError, ValueError) as exc:
                problems.append(self.find("error", "update_unusable", f"update {update_id}: {exc}", **where))
                continue
            if refused is not None:
                problems.append(
                    self.find(
                        "error",
                        "update_fails_policy",
                        f"accepted update {update_id} now fails {refused}",
                        **where,
                    )
                )
            updates.append(
                ClientUpdate(
                    update_id=update.update_id,
                    domain=update.domain,
                    weights=final,
                    num_examples=update.num_examples,
                    staleness=staleness,
                    base=base,
                )
            )
        return updates, problems

    def published_weights(self, number: int) -> Mapping[str, torch.Tensor] | None:
        """The weights of version ``number`` as first published (what the domains trained from)."""
        if number not in self._bases:
            copies = self.index.versions.get(number)
            try:
                self._bases[number] = from_wire(copies[0].event.tensors) if copies else None  # type: ignore[attr-defined]
            except TensorCodecError:
                self._bases[number] = None
        return self._bases[number]

    def check_version(
        self, published: ModelVersion, parent: ModelVersion | None, recomputed_parent: ModelVersion | None
    ) -> tuple[VersionCheck, ModelVersion | None]:
        """Verify one version; return the verdict and the version as recomputed (for the next one)."""
        number = published.version
        problems: list[str] = []
        where = {"version": number}
        self_hash_ok = _hash_ok(published)
        if not self_hash_ok:
            problems.append(
                self.find(
                    "error",
                    "stored_version_tampered",
                    f"version {number}: its tensors do not hash to its recorded sha256",
                    **where,
                )
            )
        if published.strategy != self.task.strategy:
            problems.append(
                self.find(
                    "error",
                    "strategy",
                    f"version {number} records strategy {published.strategy.name} "
                    f"{published.strategy.params}, the task says {self.task.strategy.name}",
                    **where,
                )
            )
        recomputed: ModelVersion | None = None
        basis = None
        if number == 0:
            recomputed, basis = initial_version(self.task), "task"
        elif parent is None:
            problems.append(
                self.find(
                    "error", "lineage", f"version {number}: parent {number - 1} is not on the log", **where
                )
            )
        else:
            if published.parent_version != parent.version:
                problems.append(
                    self.find(
                        "error",
                        "lineage",
                        f"version {number} names parent {published.parent_version}, "
                        f"but the previous version is {parent.version}",
                        **where,
                    )
                )
            recomputed, basis = self._recompute(published, parent, recomputed_parent, problems)
        if self.task.privacy is not None and number > 0:
            for finding in budget_findings(self.task, published):
                self.findings.append(finding)
                problems.append(finding.message)
        reproduced = recomputed is not None and _same_bytes(recomputed, published)
        if recomputed is not None and reproduced:
            for name in (
                "contributing_updates",
                "contributing_domains",
                "round",
                "parent_version",
                "privacy",
            ):
                if getattr(recomputed, name) != getattr(published, name):
                    reproduced = False
                    problems.append(
                        self.find(
                            "error",
                            "metadata",
                            f"version {number}: {name} is {getattr(published, name)!r}, "
                            f"replay gives {getattr(recomputed, name)!r}",
                            **where,
                        )
                    )
        elif recomputed is not None:
            problems.append(self._mismatch(published, recomputed))
        check = VersionCheck(
            version=number,
            round=published.round,
            parent_version=published.parent_version,
            strategy=published.strategy.name,
            contributing_domains=list(published.contributing_domains),
            contributing_updates=list(published.contributing_updates),
            published_sha256=published.sha256,
            recomputed_sha256=recomputed.sha256 if recomputed is not None else None,
            self_hash_ok=self_hash_ok,
            reproduced=reproduced,
            parent_basis=basis if reproduced else None,  # type: ignore[arg-type]
            problems=problems,
        )
        return check, recomputed

    def _recompute(
        self,
        published: ModelVersion,
        parent: ModelVersion,
        recomputed_parent: ModelVersion | None,
        problems: list[str],
    ) -> tuple[ModelVersion | None, str | None]:
        """Aggregate from the recomputed parent, then (if that differs and fails) the published one.

        Only the findings of the attempt kept are recorded: one that reproduces with the fewest
        findings, else the one with the fewest findings (a clip judged against the wrong parent would
        otherwise raise false alarms).
        """
        candidates: list[tuple[str, ModelVersion]] = []
        if recomputed_parent is not None:
            candidates.append(("recomputed", recomputed_parent))
        if recomputed_parent is None or not _same_bytes(recomputed_parent, parent):
            candidates.append(("published" if recomputed_parent is not None else "trusted", parent))
        before = list(self.findings)
        attempts = []
        for rank, (basis, base) in enumerate(candidates):
            self.findings = list(before)
            attempt_problems: list[str] = []
            version = self._attempt(published, base, attempt_problems)
            reproduces = version is not None and _same_bytes(version, published)
            score = (not reproduces, len(self.findings), rank)
            attempts.append((score, (version, basis, self.findings, attempt_problems)))
        kept = min(attempts, key=lambda item: item[0])[1]
        version, basis, self.findings, attempt_problems = kept
        problems.extend(attempt_problems)
        return version, basis

    def _attempt(
        self, published: ModelVersion, base: ModelVersion, problems: list[str]
    ) -> ModelVersion | None:
        where = {"version": published.version}
        try:
            weights, state = from_wire(base.tensors), from_wire(base.server_state)
        except TensorCodecError as exc:
            problems.append(self.find("error", "parent_unusable", f"version {base.version}: {exc}", **where))
            return None
        updates, trouble = self.client_updates(published, base, weights)
        problems.extend(trouble)
        if not updates:
            problems.append(
                self.find("error", "lineage", f"version {published.version}: no usable update", **where)
            )
            return None
        try:
            return aggregate_version(
                self.task,
                base,
                weights,
                state,
                updates,
                created_at=published.created_at,
                dp_secret=self.dp_secret,
            )
        except ValueError as exc:
            problems.append(self.find("error", "aggregate", f"version {published.version}: {exc}", **where))
            return None

    def _mismatch(self, published: ModelVersion, recomputed: ModelVersion) -> str:
        """Name the version and the updates it was made of, the suspects first."""
        suspects = {f.update_id for f in self.findings if f.update_id is not None}
        named = []
        for update_id in sorted(published.contributing_updates, key=lambda u: u not in suspects):
            found, _ = self.index.accepted_update(update_id)
            where = f" at partition {found.partition} offset {found.offset}" if found is not None else ""
            flag = " (suspect)" if update_id in suspects else ""
            named.append(f"{update_id}{where}{flag}")
        what = "tensors" if recomputed.sha256 != published.sha256 else "server state"
        return self.find(
            "error",
            "version_mismatch",
            f"version {published.version} does not reproduce ({what}): recomputed sha256 "
            f"{recomputed.sha256[:16]}, published {published.sha256[:16]}; "
            f"made of {', '.join(named) or 'no update'}",
            version=published.version,
        )


def _hash_ok(version: ModelVersion) -> bool:
    try:
        return tensors_sha256(version.tensors) == version.sha256
    except TensorCodecError:
        return False


def _same_bytes(a: ModelVersion, b: ModelVersion) -> bool:
    """Same weights (by sha256 field) and the same server optimizer state, byte for byte."""
    return a.sha256 == b.sha256 and tensors_sha256(a.server_state) == tensors_sha256(b.server_state)


def replay(
    events: Iterable[LoggedEvent],
    task_id: str,
    *,
    governance_key: Ed25519PublicKey,
    window_seconds: float = 900.0,
    from_version: int = 0,
    to_version: int | None = None,
    on_progress: ProgressCallback | None = None,
    dp_secret: bytes = b"",
) -> ReplayResult:
    """Verify the versions ``from_version..to_version`` of ``task_id`` from the events of the log.

    With ``from_version > 0`` the published version before it is the (trusted) starting point. A task
    under central DP needs the governance's ``dp_secret``: the noise seeds are keyed by it.
    ``governance_key`` is the pinned key every signature is traced back to (``window_seconds``: the
    largest gap between an event's signing time and its record time). Raises ``ReplayError`` only
    when there is nothing to verify; every failed check is a finding.
    """
    started = time.perf_counter()
    signatures = check_signatures(events, governance_key, window_seconds=window_seconds)
    index = TaskLog.of(signatures.trusted, task_id)
    if index.task.privacy is not None and not dp_secret:
        raise ReplayError(f"task {task_id!r} uses differential privacy: its noise needs MESHFL_DP_SECRET")
    if index.task.privacy is not None:
        try:
            check_secret(dp_secret)
        except ValueError as exc:
            raise ReplayError(f"task {task_id!r}: MESHFL_DP_SECRET is too short: {exc}") from exc
    replayer = _Replayer(index, dp_secret)
    replayer.findings.extend(signatures.findings)
    replayer.findings.extend(log_findings(index))
    for problem in dp_config_problems(index.task):
        replayer.find("error", "privacy_config", f"central DP cannot protect this task: {problem}")
    numbers = [n for n in index.versions if n >= from_version and (to_version is None or n <= to_version)]
    if not numbers:
        raise ReplayError(f"task {task_id!r} has no published version in {from_version}..{to_version}")
    parent = index.version(numbers[0] - 1) if numbers[0] > 0 else None
    recomputed_parent: ModelVersion | None = None
    checks: list[VersionCheck] = []
    for done, number in enumerate(numbers, start=1):
        published = index.version(number)
        assert published is not None
        if parent is not None and parent.version != number - 1:
            parent, recomputed_parent = None, None
        check, recomputed = replayer.check_version(published, parent, recomputed_parent)
        checks.append(check)
        parent, recomputed_parent = published, recomputed
        if on_progress is not None:
            on_progress(done, len(numbers))
    replayer.findings.extend(leftover_findings(index))
    findings = list({f.model_dump_json(): f for f in replayer.findings}.values())
    result = ReplayResult(
        task_id=task_id,
        versions=checks,
        findings=findings,
        events_read=index.events_read,
        seconds=time.perf_counter() - started,
    )
    log.info("replay done", task=task_id, versions=len(checks), ok=result.ok, findings=len(findings))
    return result
