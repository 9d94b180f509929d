"""Generation targets on decoder LMs: answer-only LM loss, exact match and choice log-likelihood,
train-source / transfer / eval / export on tiny random causal LMs (Llama, GPT-2; hidden 32, 2 layers)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import invoke
from tiny_decoders import GEN_FAST, VOCAB, qa_options

from scalearn_cli.errors import DataError, ModelError, UsageError
from scalearn_cli.data.generation import IGNORE, encode_pairs, lm_features, loader
from scalearn_cli.decoder.model import GenerativeModel
from scalearn_cli.train import TrainConfig

# ---------------------------------------------------------------------------------------------------- data


def test_labels_mask_the_prompt_and_keep_the_answer_and_eos(lms):
    from scalearn_cli.backbone import load_backbone

    _, tok, _ = load_backbone(str(lms["llama"]), causal_lm=True)
    fitted = encode_pairs(tok, ["Q: the movie was good A:", "Q: the plot A:"], ["movie", "plot"], 32)
    feats = lm_features(fitted.pairs)
    for feat, answer in zip(feats, ["movie", "plot"]):
        n_prompt = sum(1 for x in feat["labels"] if x == IGNORE)
        assert feat["labels"][n_prompt:] == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert feat["input_ids"][n_prompt:] == feat["labels"][n_prompt:]
    batch = next(iter(loader(feats, tok, 2)))
    assert batch["attention_mask"][1].tolist()[:2] == [0, 0]  # the shorter row is padded on the left
    assert batch["input_ids"][:, -1].tolist() == [tok.eos_token_id] * 2


def test_answer_loss_does_not_depend_on_the_prompt_tokens_it_masks(lms):
    """Same answer, same labels, other prompt tokens: the labels are identical, so only the answer is scored."""
    from scalearn_cli.decoder.model import answer_loss

    logits = torch.randn(1, 6, 10)
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 4, 5, 2]])
    loss, stats = answer_loss(logits, labels)
    logp = logits[0, :-1].log_softmax(-1)
    want = -(logp[2, 4] + logp[3, 5] + logp[4, 2])
    assert torch.allclose(loss, want / 3) and torch.allclose(stats[0], torch.stack([-want, torch.tensor(3.0)]))


def test_long_prompts_are_cut_from_the_left_and_counted(lms, caplog):
    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.data.generation import report

    _, tok, _ = load_backbone(str(lms["llama"]), causal_lm=True)
    long = " ".join(["w1"] * 20) + " w9"
    fitted = encode_pairs(tok, [long, "short w2", long], ["movie", "plot", " ".join(["w3"] * 12)], 8)
    assert fitted.cut == 1 and fitted.dropped == 1 and fitted.pairs[2] is None
    p, a = fitted.pairs[0]
    assert len(p) + len(a) == 8 and p[-1] == tok.convert_tokens_to_ids("w9")  # the end of the prompt is kept
    with caplog.at_level(logging.WARNING):
        report(fitted, 3, 8, "train")
    assert "the train split: 2 of 3 rows do not fit --max-length 8: 1 prompts cut" in caplog.text
    with pytest.raises(DataError, match="every row of the test split has an answer of 8 tokens or more"):
        report(SimpleNamespace(dropped=2, cut=0), 2, 8, "test")


def test_a_generation_task_without_an_answer_field_is_one_clear_line(qa_file, tmp_path):
    with pytest.raises(UsageError, match="^--problem-type generation needs --answer-field"):
        qa_options(qa_file, answer_field=None).spec()
    with pytest.raises(UsageError, match="needs one of --prompt-field COLUMN or --prompt-template"):
        qa_options(qa_file, prompt_template=None).spec()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "the movie", "answer": ""}) + "\n")
    from scalearn_cli.data.rows import load_raw
    from scalearn_cli.data.splits import make_splits

    with pytest.raises(DataError, match="^row 0 of train has no answer in column 'answer'"):
        make_splits(qa_options(bad).spec(), load_raw(qa_options(bad).spec(), data_file=bad))


def test_an_encoder_is_refused_for_generation(tiny_model_dir):
    from scalearn_cli.backbone import load_backbone

    with pytest.raises(ModelError, match="generation targets need a decoder LM.*bert encoder"):
        load_backbone(str(tiny_model_dir), causal_lm=True)


# ------------------------------------------------------------------------------------------------- scoring


class Echo(torch.nn.Module):
    """A crafted LM: the next token is always ``table[current token]`` (logit 5 for it, 0 elsewhere)."""

    def __init__(self, table: dict[int, int], vocab: int) -> None:
        super().__init__()
        self.table, self.vocab = table, vocab
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        nxt = torch.tensor([[self.table.get(int(t), 1) for t in row] for row in input_ids])
        return SimpleNamespace(logits=torch.nn.functional.one_hot(nxt, self.vocab).float() * 5.0)

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        ids = input_ids
        for _ in range(max_new_tokens):
            ids = torch.cat([ids, self.forward(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
        return ids


def test_exact_match_and_choice_log_likelihood_on_a_crafted_lm(lms):
    from datasets import Dataset

    from scalearn_cli.backbone import load_backbone
    from scalearn_cli.decoder.score import choice_logprobs, score_generation
    from scalearn_cli.tasks import generation_task

    _, tok, _ = load_backbone(str(lms["llama"]), causal_lm=True)
    ids = tok.convert_tokens_to_ids
    # after "A:"-less prompts ending in "good" the LM says "movie <eos>"; after "bad" it says "plot <eos>"
    model = GenerativeModel(Echo({ids("good"): ids("movie"), ids("bad"): ids("plot"), ids("movie"): 2,
                                  ids("plot"): 2}, len(VOCAB)))
    rows = Dataset.from_list([{"q": "the film was good", "answer": "movie", "c1": "movie", "c2": "plot"},
                              {"q": "the film was bad", "answer": "movie", "c1": "plot", "c2": "movie"},
                              {"q": "the film was bad", "answer": "plot", "c1": "movie", "c2": "plot"}])
    em = score_generation(model, generation_task("answer", prompt_field="q"), rows, tok, 32)
    assert em == {"exact_match": pytest.approx(200 / 3)}  # row 2's gold is "movie", the LM says "plot"
    scores = choice_logprobs(model, tok, ["the film was good", "the film was bad"], [["movie", "plot"]] * 2, 32)
    assert scores.argmax(1).tolist() == [0, 1]
    mc = score_generation(model, generation_task("answer", prompt_field="q", choice_fields=["c1", "c2"]), rows,
                          tok, 32)
    assert mc == {"accuracy": pytest.approx(200 / 3)}


# ----------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def gen_comps(gen_sources, qa_file, tmp_path_factory) -> dict[str, Path]:
    """arch -> a ScaLearn composition of its two generation sources trained on the generation target."""
    from scalearn_cli.stages.transfer import TransferOptions, transfer

    root = tmp_path_factory.mktemp("gen-comps")
    out = {}
    for arch, sources in gen_sources.items():
        out[arch] = root / arch
        transfer(TransferOptions(tuple(map(str, sources)), qa_options(qa_file, few_shot=8), out[arch],
                                 train=TrainConfig(**GEN_FAST)))
    return out


def test_a_generation_source_is_a_vanilla_peft_lora_of_the_causal_lm(gen_sources, lms):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from scalearn_cli.artifacts import read_metadata

    folder = gen_sources["llama"][0]
    assert not (folder / "head.safetensors").exists()
    meta = read_metadata(folder)
    assert meta["head"] is None and meta["task"]["problem_type"] == "generation"
    assert set(meta["metrics"]["test"]) == {"exact_match", "loss"}
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(lms["llama"])), str(folder))
    assert any("lora_A" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_transfer_on_a_generation_target_trains_omega_only_and_scores_exact_match(arch, gen_comps):
    from scalearn_cli.artifacts import read_metadata

    meta = read_metadata(gen_comps[arch])
    assert meta["kind"] == "composition" and meta["head"] is None
    assert not (gen_comps[arch] / "head.safetensors").exists()
    d_out = 32 + 16 if arch == "llama" else 3 * 32  # q_proj + v_proj (one kv head of 16); GPT-2's fused c_attn
    assert meta["adapter"]["parameters"] == 2 * 2 * d_out  # N sources · L layers · D_out: ω only, no head
    assert meta["training"]["train_examples"] == 8 and meta["training"]["steps"] == 2
    assert {"exact_match", "loss"} == set(meta["metrics"]["test"])


def test_eval_rescores_a_generation_composition_and_source(gen_comps, gen_sources):
    from scalearn_cli.artifacts import read_metadata
    from scalearn_cli.stages.evaluate import evaluate_folder

    for folder in gen_comps.values():
        result = evaluate_folder(folder)
        saved = read_metadata(folder)["metrics"]["test"]
        assert result["main_metric"] == "exact_match"
        assert result["metrics"]["exact_match"] == saved["exact_match"]
        assert result["metrics"]["loss"] == pytest.approx(saved["loss"], abs=1e-5)  # not batch-size dependent
    # a source (its weights were replaced after training, so only that it scores through PEFT on the causal LM)
    result = evaluate_folder(gen_sources["gpt2"][1], batch_size=3)
    assert set(result["metrics"]) == {"exact_match", "loss"} and result["examples"] == 4


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_peft_export_loads_on_the_causal_lm_and_generates_the_same_tokens(arch, gen_comps, tmp_path):
    from peft import PeftModel
    from helpers import random_omega
    from transformers import AutoModelForCausalLM

    from scalearn_cli.compose import load_composition
    from scalearn_cli.export import export, verify

    random_omega(gen_comps[arch], 3)  # away from the init, so a wrong fold shows
    out = tmp_path / "export"
    export(gen_comps[arch], out)
    check = verify(out, gen_comps[arch])
    assert check["ok"] and check["max_abs_diff"] < 1e-5, check
    composed, tok, meta = load_composition(gen_comps[arch])
    lm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(meta["base_model"]["id"]), str(out))
    vanilla = GenerativeModel(lm).eval()
    fitted = encode_pairs(tok, ["Q: the movie was good A:", "Q: the plot A:", "w1 w2 w3"], ["a", "b", "c"], 32)
    batch = next(iter(loader(lm_features(fitted.pairs, with_answer=False), tok, 3)))
    args = (batch["input_ids"], batch["attention_mask"], 6, tok.pad_token_id, None)
    want, got = composed.generate(*args), vanilla.generate(*args)
    assert want.shape == (3, 6) and torch.equal(want, got)
    with torch.no_grad():
        _, logits_c = composed(batch["input_ids"], batch["attention_mask"])
        _, logits_v = vanilla(batch["input_ids"], batch["attention_mask"])
    print(f"{arch}: max |Δlogit| {float((logits_c - logits_v).abs().max()):.2e}, verify {check['max_abs_diff']:.2e}")
    assert torch.allclose(logits_c, logits_v, atol=1e-5)


def test_left_padding_does_not_change_greedy_answers(gen_comps):
    from scalearn_cli.compose import load_composition
    from scalearn_cli.decoder.score import generate_answers

    model, tok, _ = load_composition(gen_comps["gpt2"])
    texts = ["Q: the movie was good A:", "Q: w1 w2 w3 w4 w5 w6 w7 w8 A:"]
    alone = [generate_answers(model, tok, [t], ["movie plot"], 32)[0] for t in texts]
    assert generate_answers(model, tok, texts, ["movie plot"] * 2, 32) == alone


def test_cli_generation_options_and_choices(gen_sources, qa_file, tmp_path):
    out = tmp_path / "mc"
    args = ["transfer", "--task", "custom", "--problem-type", "generation", "--data-file", str(qa_file),
            "--prompt-field", "question", "--answer-field", "answer", "--choice-fields", "c1,c2", "--few-shot", "4",
            "--max-steps", "1", "--batch-size", "4", "--max-length", "32", "--out", str(out), "--json",
            *[a for s in gen_sources["llama"] for a in ("--source", str(s))]]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["metrics"]["test"]) == {"accuracy", "loss"}
    bad = invoke(*args[:9], *args[11:], "--overwrite")  # no --answer-field
    assert bad.exit_code == 2, bad.output  # a usage error
    assert "--problem-type generation needs --answer-field" in " ".join(bad.output.split()), bad.output
