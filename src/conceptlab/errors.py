"""Errors conceptlab raises for bad input: each names the argument, the value and the fix."""

from __future__ import annotations


class ConceptlabError(Exception):
    """Base class for every error conceptlab raises on purpose."""


class InputError(ConceptlabError, ValueError):
    """A user-supplied value is wrong; the message says which, why, and what to do instead."""

    def __init__(self, argument: str, value: object, problem: str, fix: str):
        self.argument, self.value, self.problem, self.fix = argument, value, problem, fix
        super().__init__(f"{argument}={value!r}: {problem}. {fix}")


class ModelNotAvailableError(ConceptlabError, OSError):
    """A model could not be found locally and cannot be downloaded from here."""
