"""The z3 model of vfiospec: the abstract state and actions in z3 (schema.py,
transitions.py), the invariants (invariants.py), the inductive prover
(prover.py, `vfiospec prove`), bounded exploration of properties (explorer.py,
formula.py, tracegen.py, `vfiospec explore`), runtime checking of concrete
states (runtime.py: check_state) and the cross-check against the reference
(crosscheck.py).  See model/README.md."""

from .runtime import Violation, check_state, check_states

__all__ = ["Violation", "check_state", "check_states"]
