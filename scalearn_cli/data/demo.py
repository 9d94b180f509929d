"""Synthetic demo tasks (the zoo's demo recipes, the tests), generated from templates (no dataset is copied).

Each task is learnable by a small encoder but not by word counting alone: sentiment has negation and
"X, but Y" contrast, paraphrase negatives share most words with their pair, and NLI needs hypernyms
(man -> person) and incompatible activities or places.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scalearn_cli.cache import cache_home

N_TRAIN, N_VALIDATION = 600, 200
Row = dict[str, Any]

# --------------------------------------------------------------------------------------------- sentiment
_POSITIVE = ("great", "wonderful", "delightful", "superb", "charming", "brilliant", "pleasant", "excellent",
             "lovely", "gripping", "heartfelt", "clever")
_NEGATIVE = ("awful", "terrible", "dull", "boring", "disappointing", "clumsy", "tedious", "bland", "dreadful",
             "messy", "lifeless", "forgettable")
_THINGS = ("movie", "film", "plot", "soundtrack", "acting", "dialogue", "ending", "script", "cast", "story",
           "pacing", "camera work")
_INTENSIFIERS = ("", "", "really ", "truly ", "quite ", "very ", "surprisingly ", "rather ")
_PLAIN = ("the {n} was {i}{a}.", "i found the {n} {i}{a}.", "honestly, the {n} is {i}{a}.",
          "everyone agreed the {n} felt {i}{a}.")
_NEGATED = ("the {n} was not {i}{a}.", "i would not call the {n} {i}{a}.", "the {n} was never {i}{a}.",
            "nobody found the {n} {i}{a}.")


def _sentiment_row(rng: random.Random) -> Row:
    label = rng.randint(0, 1)  # 0 negative, 1 positive
    kind = rng.choices(("plain", "negated", "contrast"), weights=(2, 1, 1))[0]
    # A negated adjective of the opposite polarity carries the label ("not boring" is positive).
    polarity = 1 - label if kind == "negated" else label
    words = {"n": rng.choice(_THINGS), "i": rng.choice(_INTENSIFIERS),
             "a": rng.choice(_POSITIVE if polarity else _NEGATIVE)}
    if kind == "plain":
        sentence = rng.choice(_PLAIN).format(**words)
    elif kind == "negated":
        sentence = rng.choice(_NEGATED).format(**words)
    else:  # the clause after "but" decides; the first clause says the opposite
        first = rng.choice(_NEGATIVE if label else _POSITIVE)
        sentence = "the {n0} was {a0}, but the {n} was {i}{a}.".format(n0=rng.choice(_THINGS), a0=first, **words)
    return {"sentence": sentence, "label": label}


# -------------------------------------------------------------------------------------------- paraphrase
_SUBJECTS = {"the teacher": "the instructor", "my neighbour": "the man next door",
             "a young doctor": "a junior physician", "the old farmer": "the elderly farmer",
             "our manager": "our boss", "the little girl": "the small child"}
_VERBS = {"bought": "purchased", "repaired": "fixed", "cleaned": "washed", "found": "discovered",
          "lost": "misplaced", "sold": "sold off"}
_OBJECTS = {"car": "automobile", "bicycle": "bike", "sofa": "couch", "laptop": "notebook computer",
            "jacket": "coat", "boat": "small ship"}
_TIMES = {"yesterday": "the day before", "last week": "the previous week", "this morning": "earlier today",
          "on monday": "on monday", "in the evening": "at night"}
_SLOTS = (_SUBJECTS, _VERBS, _OBJECTS, _TIMES)


def _render(slots: list[str], rng: random.Random) -> str:
    subj, verb, obj, time = slots
    form = rng.randrange(3)
    if form == 0:
        return f"{subj} {verb} the {obj} {time}."
    if form == 1:
        return f"{time}, {subj} {verb} the {obj}."
    return f"the {obj} was {verb} by {subj} {time}."


def _paraphrase_row(rng: random.Random) -> Row:
    base = [rng.choice(list(table)) for table in _SLOTS]
    label = rng.randint(0, 1)  # 0 not_equivalent, 1 equivalent
    other = list(base)
    if label == 0:  # change one or two slots: high word overlap, different meaning
        for slot in rng.sample(range(4), rng.choice((1, 1, 2))):
            other[slot] = rng.choice([v for v in _SLOTS[slot] if v != base[slot]])
    # Synonym swaps on both kinds of pairs, so shared words alone do not give the label away.
    other = [table[w] if rng.random() < 0.5 else w for table, w in zip(_SLOTS, other)]
    return {"sentence1": _render(base, rng), "sentence2": _render(other, rng), "label": label}


# ---------------------------------------------------------------------------------------------------- nli
# (noun, hypernym, incompatible noun)
_PEOPLE = (("man", "person", "woman"), ("woman", "person", "man"), ("boy", "child", "girl"), ("girl", "child", "boy"))
# (activity, what it entails)
_ACTIVITIES = (("playing the guitar", "playing music"), ("playing the violin", "playing music"),
               ("eating a sandwich", "eating"), ("reading a newspaper", "reading"),
               ("riding a bicycle", "riding something"), ("painting a fence", "painting"))
_PLACES = (("park", "outdoors"), ("beach", "outdoors"), ("street", "outdoors"), ("kitchen", "indoors"),
           ("library", "indoors"), ("office", "indoors"))
_ATTRIBUTES = (" in a red shirt", " with a hat", " in a blue coat")
_PURPOSES = (" for a friend", " for the first time", " to pass the time")


def _nli_row(rng: random.Random) -> Row:
    """Every hypothesis has the shape of the premise, so its words alone do not give the label away."""
    subj, hyper, other_subj = rng.choice(_PEOPLE)
    act, general = rng.choice(_ACTIVITIES)
    place, where = rng.choice(_PLACES)
    attr = rng.choice(_ATTRIBUTES) if rng.random() < 0.5 else ""
    purpose = rng.choice(_PURPOSES) if rng.random() < 0.3 else ""
    premise = f"a {subj}{attr} is {act} in the {place}{purpose}."
    # Start from an entailed hypothesis (same or more general parts, some dropped), then break one part.
    h = {"subj": rng.choice((subj, hyper)), "attr": attr if rng.random() < 0.5 else "",
         "act": rng.choice((act, general)), "place": rng.choice(("", f" in the {place}", f" {where}")),
         "purpose": purpose if rng.random() < 0.5 else ""}
    label = rng.randint(0, 2)  # 0 entailment, 1 neutral, 2 contradiction
    if label == 1:  # add something the premise does not say
        options = [("attr", a) for a in _ATTRIBUTES if a != attr] + [("purpose", p) for p in _PURPOSES if not purpose]
        key, value = rng.choice(options)
        h[key] = value
    elif label == 2:  # contradict one part: who, what or where
        part = rng.choice(("subj", "act", "place"))
        if part == "subj":
            h["subj"] = other_subj
        elif part == "act":
            h["act"] = rng.choice([a for pair in _ACTIVITIES if general not in pair for a in pair])
        else:
            h["place"] = rng.choice([f" in the {p}" for p, w in _PLACES if w != where] + [
                " indoors" if where == "outdoors" else " outdoors"])
    hypothesis = f"a {h['subj']}{h['attr']} is {h['act']}{h['place']}{h['purpose']}."
    return {"sentence1": premise, "sentence2": hypothesis, "label": label}


_GENERATORS: dict[str, Callable[[random.Random], Row]] = {
    "demo-sentiment": _sentiment_row,
    "demo-paraphrase": _paraphrase_row,
    "demo-nli": _nli_row,
}


def _write_jsonl(path: Path, rows: list[Row]) -> None:
    """Write atomically (temp file, then rename): a reader in another process never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for idx, row in enumerate(rows):
                fh.write(json.dumps({**row, "idx": idx}, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_demo_tasks(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write the demo tasks as ``out_dir/<task>/{train,validation}.jsonl`` (600 / 200 rows, glue-like schema).

    The same ``seed`` always writes the same files. Returns the folder of each task by name, ready for
    ``load_raw(get_task(name), data_dir=folder)``.
    """
    folders: dict[str, Path] = {}
    for name, make_row in _GENERATORS.items():
        rng = random.Random(f"{name}:{seed}")
        rows = [make_row(rng) for _ in range(N_TRAIN + N_VALIDATION)]
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        _write_jsonl(folder / "train.jsonl", rows[:N_TRAIN])
        _write_jsonl(folder / "validation.jsonl", rows[N_TRAIN:])
        folders[name] = folder
    return folders


def demo_folder(name: str, root: Path | None = None, seed: int = 0) -> Path:
    """The folder of demo task ``name`` under ``root/demo`` (default: the per-user cache, ``~/.cache/scalearn/
    demo-data``, not a temp folder other users of the machine could write first), written when missing.

    The generator is deterministic, so a folder written here holds the same rows as any other: a demo
    source whose recorded data folder was deleted can be read again from this one.
    """
    if name not in _GENERATORS:
        raise KeyError(f"{name} is not a demo task (known: {', '.join(_GENERATORS)})")
    base = Path(root) if root is not None else cache_home() / "demo-data"
    folder = base / "demo" / name
    if not ((folder / "train.jsonl").is_file() and (folder / "validation.jsonl").is_file()):
        write_demo_tasks(base / "demo", seed=seed)
    return folder
