"""Tiny random decoder LMs (Llama, Qwen2, GPT-2; hidden 32, 2 layers) and a word-level tokenizer, saved offline."""

from __future__ import annotations

from pathlib import Path

import torch

from helpers import WORDS
from scalearn_cli.stages.common import DataOptions

ARCHS = ("llama", "qwen2", "gpt2")
VOCAB = ["<pad>", "<unk>", "<eos>", *WORDS, *[f"w{i}" for i in range(60)]]
NOUNS = ["movie", "film", "plot", "actor"]
# TrainConfig keywords for the generation tests: prompts and answers need 32 tokens
GEN_FAST = dict(epochs=1, batch_size=8, max_length=32, max_steps=2, lr=5e-3)


def tiny_tokenizer(pad: bool):
    """A word-level fast tokenizer with eos (and pad unless ``pad`` is False, like GPT-2's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"unk_token": "<unk>", "eos_token": "<eos>", **({"pad_token": "<pad>"} if pad else {})}
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_input_names=["input_ids", "attention_mask"],
                                   **special)


def tiny_decoder(arch: str, lm: bool = False):
    """A random decoder (hidden 32, 2 layers) of ``arch``: bare, or with its LM head when ``lm``."""
    import transformers as tf

    common = dict(vocab_size=len(VOCAB), bos_token_id=2, eos_token_id=2)
    if arch == "gpt2":
        model_cls = tf.GPT2LMHeadModel if lm else tf.GPT2Model
        return model_cls(tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, **common))
    config_cls, bare_cls, lm_cls = {"llama": (tf.LlamaConfig, tf.LlamaModel, tf.LlamaForCausalLM),
                                    "qwen2": (tf.Qwen2Config, tf.Qwen2Model, tf.Qwen2ForCausalLM)}[arch]
    return (lm_cls if lm else bare_cls)(config_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                   num_key_value_heads=1, intermediate_size=37, **common))


def save_tiny_decoders(root: Path, archs, lm: bool = False) -> dict[str, Path]:
    """arch -> a saved tiny decoder (seed 0) + tokenizer (GPT-2's without a pad token, as the real one)."""
    out = {}
    for arch in archs:
        torch.manual_seed(0)
        tiny_decoder(arch, lm).save_pretrained(root / arch)
        tiny_tokenizer(pad=arch != "gpt2").save_pretrained(root / arch)
        out[arch] = root / arch
    return out


def qa_options(qa_file: Path, **kw) -> DataOptions:
    """A custom generation task over ``qa_file`` (prompt ``Q: {question} A:``, answer ``answer``)."""
    base = dict(task="custom", data_file=qa_file, problem_type="generation", prompt_template="Q: {question} A:",
                answer_field="answer")
    return DataOptions(**(base | kw))
