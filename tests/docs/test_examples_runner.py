"""The example runner itself: Markdown blocks, shell words, continuations, globs and size substitutions."""

import pytest

from tests.docs.examples import (
    Block,
    ExampleError,
    blocks,
    check_block,
    commands,
    expand_globs,
    inject,
    shell_words,
    shrink,
    shrink_python,
    split_comment,
)


def test_blocks_keep_language_file_and_line():
    text = "intro\n\n```bash\nconceptlab --version\n```\n\n```toml file=cfg/a.toml\nx = 1\n```\n"
    found = blocks(text)
    assert [(b.language, b.file, b.line) for b in found] == [("bash", None, 4), ("toml", "cfg/a.toml", 8)]
    assert found[1].text == "x = 1\n"


def test_inline_backticks_are_not_fences():
    assert blocks("  ```` ```toml file=NAME ````, which is prose\n") == []


def test_unknown_or_unrunnable_blocks_are_errors():
    with pytest.raises(ExampleError, match="unknown code block language"):
        check_block("p.md", Block("sh", "sh", "ls\n", 3))
    with pytest.raises(ExampleError, match="needs file=NAME"):
        check_block("p.md", Block("toml", "toml", "x = 1\n", 3))
    check_block("p.md", Block("text", "text", "output\n", 3))


def test_shell_words_follow_quotes_and_flag_globs():
    words, globs = shell_words("""conceptlab x --only emotion=happy,"in love" 'a b' ti/*.npy "q*" a\\ b""")
    assert words == ["conceptlab", "x", "--only", "emotion=happy,in love", "a b", "ti/*.npy", "q*", "a b"]
    assert globs == [False, False, False, False, False, True, False, False]


def test_comments_continuations_and_needs():
    block = Block("bash", "bash", 'conceptlab a --x "#1" \\\n    --y 2   # why\n\n# only a comment\n'
                  "conceptlab generate --model some/hub-id --out o/   # needs: hub\n", 10)
    cmds = commands(block)
    assert [c.argv for c in cmds] == [["conceptlab", "a", "--x", "#1", "--y", "2"],
                                      ["conceptlab", "generate", "--model", "some/hub-id", "--out", "o/"]]
    assert [c.line for c in cmds] == [10, 14]
    assert [c.needs for c in cmds] == [None, "hub"]
    assert split_comment("a 'b # c' # d") == ("a 'b # c' ", "# d")


def test_shrink_replaces_only_numbers_of_listed_flags():
    argv, _ = shrink(["x", "--steps", "500", "-n", "8", "--n", "500", "--class-images=50", "--seed", "3",
                      "--steps_x", "9", "--num_images", "6"])
    assert argv == ["x", "--steps", "2", "-n", "1", "--n", "8", "--class-images=2", "--seed", "3",
                    "--steps_x", "9", "--num_images", "1"]


def test_inject_adds_small_defaults_the_parser_has():
    assert inject(["edit", "--prompt", "a", "--to", "b", "--out", "o"])[-2:] == ["--steps", "2"]
    assert inject(["generate", "--prompt", "a", "--steps", "3", "--out", "o"]).count("--steps") == 1
    assert "--steps" not in inject(["world", "export", "--n", "2", "--out", "o"])


def test_shrink_python_keyword_arguments():
    src = "GenerationConfig(prompt='x', n=4, steps=30, cross_steps=0.8, seed=7)\nedit(p, s, steps=50)"
    assert shrink_python(src) == "GenerationConfig(prompt='x', n=1, steps=2, cross_steps=0.8, seed=7)\nedit(p, s, steps=2)"


def test_globs_expand_sorted_or_stay(tmp_path):
    (tmp_path / "b.npy").write_text("")
    (tmp_path / "a.npy").write_text("")
    assert expand_globs(["x", "*.npy", "*.pt"], [False, True, True], tmp_path) == ["x", "a.npy", "b.npy", "*.pt"]
