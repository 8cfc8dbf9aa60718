"""``data.tokenizer.path`` may name a Hugging Face ``tokenizer.json`` file, as TokenizerConfig
documents (Megatron alone takes such a path for a hub repo id and fails)."""

from __future__ import annotations

import shutil

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from tower_megatron.config.data import TokenizerConfig
from tower_megatron.data.tokenizer import build_tokenizer, tokenizer_fingerprint

TEXT = "Todos os seres humanos nascem livres e iguais em dignidade e em direitos."


@pytest.fixture
def tokenizer_json(tmp_path):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT, "All human beings are born free and equal."] * 50, trainer)
    path = tmp_path / "tok" / "tokenizer.json"
    path.parent.mkdir()
    tok.save(str(path))
    return path


def test_tokenizer_json_file_path_loads(tokenizer_json):
    reference = Tokenizer.from_file(str(tokenizer_json))  # the library itself
    want = reference.encode(TEXT, add_special_tokens=False).ids
    from_file = build_tokenizer(TokenizerConfig(type="huggingface", path=str(tokenizer_json)))
    from_dir = build_tokenizer(TokenizerConfig(type="huggingface", path=str(tokenizer_json.parent)))
    assert from_file.tokenize(TEXT) == want == from_dir.tokenize(TEXT)
    assert from_file.vocab_size == reference.get_vocab_size() == from_dir.vocab_size
    assert tokenizer_fingerprint(
        TokenizerConfig(type="huggingface", path=str(tokenizer_json))
    ) == tokenizer_fingerprint(TokenizerConfig(type="huggingface", path=str(tokenizer_json.parent)))


def test_other_json_file_is_refused_with_its_name(tokenizer_json, tmp_path):
    other = tmp_path / "vocab.json"
    shutil.copy(tokenizer_json, other)
    with pytest.raises(ValueError) as info:
        build_tokenizer(TokenizerConfig(type="huggingface", path=str(other)))
    assert str(info.value) == (
        f"data.tokenizer.path: {other} is not a tokenizer.json; give a Hugging Face tokenizer.json "
        "file or the directory holding it"
    )
