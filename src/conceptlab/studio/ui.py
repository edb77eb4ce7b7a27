"""What every tab shares: handlers whose errors read as the CLI's, and numbers read from widgets."""

from __future__ import annotations

import functools
import os

from conceptlab.errors import ConceptlabError


def shown(fn):
    """Runs a handler; errors become one-line gr.Errors (the CLI's messages): a ConceptlabError as the CLI
    prints it, anything else as the CLI's one-line internal error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import gradio as gr

        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ConceptlabError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - one line for the page, as the CLI prints it
            if os.environ.get("CONCEPTLAB_DEBUG"):
                raise
            raise gr.Error(f"internal error: {type(e).__name__}: {e}. This is a bug in conceptlab; run the studio "
                           "with CONCEPTLAB_DEBUG=1 for the traceback and report it") from None

    return wrapper


def whole(argument: str, value) -> int:
    from conceptlab.validation import Bound

    return Bound(integer=True).check(argument, value if value is not None else "")


def pixels(value) -> int | None:
    return None if value in (None, 0, "") else whole("size", value)


def first_choice(gr, choices: list[str]):
    """A dropdown's update offering `choices`, the first one selected."""
    return gr.Dropdown(choices=choices, value=choices[0] if choices else None)
