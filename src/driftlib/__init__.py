"""driftlib: measure and correct alignment drift across LLM architectures.

The library is pure Python (numpy for the maths, torch/transformers for models); the Snakemake
workflow at the repository root calls it through the ``driftlib`` command line.
"""

from __future__ import annotations

__version__ = "0.1.0"
