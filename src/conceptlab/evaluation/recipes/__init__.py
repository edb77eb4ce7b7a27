"""Evaluation recipes: what a user measures after a run, as library functions (and `conceptlab evaluate`).

- evaluate_ti_run(RUN): a textual-inversion run's concepts judged as their object with the asked emotion,
  beside the plain word;
- evaluate_dreambooth_run(RUN): a DreamBooth run's identity, emotion and scene, and its class prompt's drift;
- evaluate_edits(RUN): a `conceptlab edit` run's word swaps, the new thing judged there and PSNR outside the
  swapped words, beside regenerating the target prompt.

Each writes OUT/scores.json (numbers, date, model, seeds, sample sizes, settings, command, and each stated
bar with its verdict), OUT/grid.png and OUT/index.html; OUT defaults to RUN-eval and is never inside RUN.
The scripts in scripts/ and `conceptlab demo` measure with these same functions.
"""

from conceptlab.evaluation.recipes.common import Bar, verdict
from conceptlab.evaluation.recipes.dreambooth import class_scores, evaluate_dreambooth_run, subject_scores
from conceptlab.evaluation.recipes.editing import evaluate_edits, score_swap, summarize_swaps
from conceptlab.evaluation.recipes.ti import JudgedPrompt, evaluate_ti_run, judged_at_guidances, judged_share

__all__ = ["Bar", "JudgedPrompt", "class_scores", "evaluate_dreambooth_run", "evaluate_edits", "evaluate_ti_run",
           "judged_at_guidances", "judged_share", "score_swap", "subject_scores", "summarize_swaps", "verdict"]
