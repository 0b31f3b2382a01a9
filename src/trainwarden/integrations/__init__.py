"""Framework integrations of the training monitor: Hugging Face ``Trainer`` and Lightning.

Each integration lives in its own module (``trainwarden.integrations.hf``,
``trainwarden.integrations.lightning``) and imports its framework only when that module is
imported, so importing this package costs nothing.
"""

from __future__ import annotations

__all__: list[str] = []
