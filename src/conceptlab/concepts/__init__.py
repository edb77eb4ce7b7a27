"""Learned concepts: placeholder tokens, embedding files in every common format, mixing."""
