"""Read a run's TensorBoard folder back with tensorboard's own event reader (EventAccumulator)."""

from __future__ import annotations

from pathlib import Path


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] for every scalar in the event files under `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert any(folder.glob("events.out.tfevents.*")), f"no event files in {folder}"
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}
