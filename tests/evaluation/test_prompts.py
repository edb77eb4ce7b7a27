from conceptlab.evaluation.prompts import PromptCase, score, standard_prompts
from conceptlab.models.base import HeldOut


def test_score_counts_per_group_and_attribute():
    cases = [PromptCase("p1", {"object": "apple", "colour": "red"}, 0, "seen"),
             PromptCase("p2", {"object": "star", "colour": "blue"}, 1, "seen"),
             PromptCase("p3", {"object": "fish", "colour": "green"}, 2, "unseen combination")]
    judged = [{"object": "apple", "colour": "red"}, {"object": "apple", "colour": "blue"},
              {"object": "fish", "colour": "red"}]
    acc, counts = score(cases, judged)
    assert acc["seen"] == {"object": 0.5, "colour": 1.0}
    assert acc["unseen combination"] == {"object": 1.0, "colour": 0.0}
    assert acc["all"]["object"] == 2 / 3 and counts == {"seen": 2, "unseen combination": 1, "all": 3}


def test_standard_prompts_respect_what_is_held_out():
    held = HeldOut()
    cases = standard_prompts(200, 40)
    seen = [c for c in cases if c.group == "seen"]
    unseen = [c for c in cases if c.group != "seen"]
    assert len(seen) == 200 and len(unseen) == 40
    for c in seen:
        assert c.expect["style"] not in held.styles
        assert not any(all(c.expect.get(k) == v for k, v in combo) for combo in held.combinations)
        if held.faceless(c.expect["object"]):
            assert "emotion" not in c.expect
    for c in unseen:
        assert any(all(c.expect.get(k) == v for k, v in combo) for combo in held.combinations)
        assert c.expect["object"] in c.prompt
    assert standard_prompts(200, 40)[5] == cases[5]  # fixed prompts, fixed seeds
