"""Built-in tokenizers: the word tokenizer keeps every sim instruction whole and distinct; cut text is refused."""

import itertools

import pytest

from mole_inference.config import preset
from mole_inference.errors import InputError
from mole_inference.model.tokenizer import ByteTokenizer, WordTokenizer, check_lengths, load_tokenizer, tokenize_batch
from mole_inference.sim.scene import CUBES
from mole_inference.sim.tasks import TASKS


def sim_instructions() -> list[str]:
    colors = [c.color for c in CUBES]
    return [t.format(color=a, base=b) for task in TASKS.values() for t in task.templates
            for a, b in itertools.permutations(colors, 2)]


def test_word_tokens_are_words_and_colours_differ():
    tok = WordTokenizer(1024)
    assert tok.words("Put the yellow cube on top of the green cube.") == [
        "put", "the", "yellow", "cube", "on", "top", "of", "the", "green", "cube", "."]
    red, blue = tok.encode("touch the red cube"), tok.encode("touch the blue cube")
    assert red[0] == tok.bos_id and len(red) == 5 and red[:3] == blue[:3] and red[3] != blue[3]


def test_tiny_preset_reads_every_sim_instruction_whole_without_collisions():
    cfg = preset("tiny")
    tok = load_tokenizer(cfg.llm.tokenizer, cfg.llm.vocab_size, cfg.llm.text_tokenizer)
    texts = sim_instructions()
    check_lengths(tok, texts, cfg.llm.max_text_tokens)  # nothing cut
    words = sorted({w for t in texts for w in tok.words(t)})
    ids = {tok.encode(w)[1] for w in words}
    assert len(ids) == len(words)  # no two words of the task suite share an embedding


def test_cut_instruction_is_an_error_in_training_and_a_warning_at_inference(caplog):
    text = "put the yellow cube on top of the green cube"
    with pytest.raises(InputError, match="max_text_tokens"):
        check_lengths(ByteTokenizer(), [text], 32)
    ids, mask = tokenize_batch(ByteTokenizer(), [text], 32)
    assert mask.all() and ids.shape == (1, 32) and "instruction" in caplog.text


def test_unknown_builtin_is_a_config_error():
    from mole_inference.errors import ConfigError

    with pytest.raises(ConfigError, match="text_tokenizer"):
        load_tokenizer(None, 260, "bpe")
