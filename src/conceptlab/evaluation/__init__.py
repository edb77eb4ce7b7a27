"""Evaluation: the sticker-world judge, prompt-set scores, the ResNet classifier, reports."""


def load_judge(path=None):
    """The shipped sticker-world judge (see evaluation/judge.py)."""
    from conceptlab.evaluation.judge import load_judge as _load

    return _load(path)
