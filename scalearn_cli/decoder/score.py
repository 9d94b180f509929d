"""Scoring a generation target: exact match of greedy-decoded answers, or the choice of highest log-likelihood.

Exact match compares the decoded new tokens (up to eos, special tokens skipped) with the gold answer, both
stripped of surrounding whitespace; up to as many new tokens are generated as the longest gold answer has (eos
included). Multiple choice scores every choice as a continuation of the prompt by its summed token log-prob
(no eos) and picks the highest, as LoraHub scores BBH. Rows dropped for not fitting ``--max-length`` count as
wrong. Both are reported x100, like the other metrics.
"""

from __future__ import annotations

import torch

from scalearn_cli.data.generation import encode_pairs, gold_index, lm_features, loader, prompts, row_choices


def score_generation(model, spec, dataset, tokenizer, max_length: int, batch_size: int = 32) -> dict[str, float]:
    """The task's metric on ``dataset``: ``accuracy`` (choices by log-likelihood) or ``exact_match``."""
    texts, answers = prompts(spec, dataset), list(dataset[spec.label_field])
    if spec.choice_fields:
        choices = row_choices(spec, dataset)
        scores = choice_logprobs(model, tokenizer, texts, choices, max_length, batch_size)
        right = [int(scores[i].argmax()) == gold_index(a, c) for i, (a, c) in enumerate(zip(answers, choices))]
        return {"accuracy": 100.0 * sum(right) / len(right)}
    decoded = generate_answers(model, tokenizer, texts, answers, max_length, batch_size)
    right = [d is not None and d.strip() == a.strip() for d, a in zip(decoded, answers)]
    return {"exact_match": 100.0 * sum(right) / len(right)}


@torch.no_grad()
def generate_answers(model, tokenizer, texts: list[str], answers: list[str], max_length: int,
                     batch_size: int = 32) -> list[str | None]:
    """Greedy answers to ``texts`` (None for a row that does not fit); prompts fitted as in training."""
    fitted = encode_pairs(tokenizer, texts, answers, max_length)
    kept = [i for i, pair in enumerate(fitted.pairs) if pair is not None]
    max_new = max(len(fitted.pairs[i][1]) for i in kept)  # the longest gold answer, eos included
    out: list[str | None] = [None] * len(texts)
    order = sorted(kept, key=lambda i: len(fitted.pairs[i][0]))  # length-sorted: little padding
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = next(iter(loader(lm_features([fitted.pairs[i] for i in rows], with_answer=False), tokenizer,
                                 len(rows))))
        new = model.generate(batch["input_ids"].to(device), batch["attention_mask"].to(device), max_new,
                             tokenizer.pad_token_id, tokenizer.eos_token_id)
        for i, ids in zip(rows, new.tolist()):
            if tokenizer.eos_token_id in ids:
                ids = ids[:ids.index(tokenizer.eos_token_id)]
            out[i] = tokenizer.decode(ids, skip_special_tokens=True)
    return out


@torch.no_grad()
def choice_logprobs(model, tokenizer, texts: list[str], choices: list[list[str]], max_length: int,
                    batch_size: int = 32) -> torch.Tensor:
    """Summed log-prob of each choice after its prompt: (rows, n_choices); -inf where a pair does not fit."""
    n = len(choices[0])
    flat_texts = [t for t in texts for _ in range(n)]
    flat_choices = [c for row in choices for c in row]
    fitted = encode_pairs(tokenizer, flat_texts, flat_choices, max_length, eos=False)
    scores = torch.full((len(flat_texts),), float("-inf"))
    kept = [i for i, pair in enumerate(fitted.pairs) if pair is not None]
    feats = lm_features(fitted.pairs)
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(feats), batch_size):
        batch = next(iter(loader(feats[start:start + batch_size], tokenizer, batch_size)))
        _, stats = model(**{k: v.to(device) for k, v in batch.items()})  # (batch, 2)
        scores[kept[start:start + batch_size]] = stats[:, 0].float().cpu()
    return scores.view(len(texts), n)
