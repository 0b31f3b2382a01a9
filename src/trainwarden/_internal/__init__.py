"""Low-level helpers shared by more than one TrainWarden concept (not public API)."""

__all__: list[str] = []
