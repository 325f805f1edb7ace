"""llava-kit: a scaled LLaVA-OneVision reproduction as one library and one CLI."""

__version__ = "0.1.0"
