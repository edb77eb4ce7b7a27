"""Prompt-to-Prompt editing: attention processors, controllers, token alignment, inversion."""
