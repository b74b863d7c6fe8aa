"""Who may be admitted to a case: the review of one join request. Pure policy, no I/O.

Nothing is admitted without a person's explicit action (the CLI's `admit` command); this
module says whether that action may go ahead, and what stands in its way:

- ``identity_changed``: the key about to be admitted differs from the pinned one and the
  person did not accept the change (``--accept-changed-identity``);
- ``patient_unbound`` / ``patient_bad_proof``: a patient's key is not bound to the
  invitation link this case's provider created (no proof, or a proof that does not
  verify) and the short code was not compared by voice (``--code-compared``).

The browser applies the same rules (frontend/static/collab/app/trust/admission.js),
tested on the same scenarios (tests/policy/trust_scenarios.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

JoinKind = Literal["claim", "invite", "patient", "rejoin"]
Binding = Literal["bound", "unbound", "bad_proof"]


@dataclass(frozen=True)
class AdmissionReview:
    allowed: bool
    blockers: tuple[str, ...]


def review_admission(*, pin: str, kind: str, binding: str | None, accept_changed: bool,
                     code_compared: bool) -> AdmissionReview:
    blockers: list[str] = []
    if pin == "changed" and not accept_changed:
        blockers.append("identity_changed")
    if kind == "patient" and binding != "bound" and not code_compared:
        # A patient request without a binding verdict counts as unbound.
        blockers.append("patient_bad_proof" if binding == "bad_proof" else "patient_unbound")
    return AdmissionReview(not blockers, tuple(blockers))
