"""Text-to-image generation: seeds, schedulers, files with their settings."""

from conceptlab.generation.generate import Generated, GenerationConfig, generate, run_generation

__all__ = ["Generated", "GenerationConfig", "generate", "run_generation"]
