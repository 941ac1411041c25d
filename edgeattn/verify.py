"""``from edgeattn.verify import verify_against_keras``: the parity API where the README shows it. The code is
in ``edgeattn.convert.verify`` (the Keras side) and ``edgeattn.graphs`` (see docs/design.md for the folders)."""

from edgeattn.convert.verify import ParityReport, compare, make_cases, verify_against_keras

__all__ = ["ParityReport", "compare", "make_cases", "verify_against_keras"]
