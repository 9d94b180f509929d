"""The shelf's public tasks beyond GLUE/SuperGLUE/SNLI: topic, sentiment, tweets, emotion, question type, NLI,
similarity, paraphrase and QA (go_emotions: multi-label), and every built-in task's *family* (``scalearn tasks``
groups by it).

Each spec names the Hub dataset closest to the shelf's files (``hub_id``/``hub_config``) and reads the columns the
files hold; its test split is the files' ``test`` split (``dev`` stays 10% of train, as for every task). Where the
shelf's copy differs from that Hub dataset, :data:`SHELF_NOTES` says how (``scalearn tasks`` prints it). The shelf's
``mnli`` and ``boolq`` folders load with GLUE's and SuperGLUE's specs of the same name (same columns and label
order); their pools are official validation splits, so with those folders the test set is the shelf's own
``validation`` file.
"""

from __future__ import annotations

from typing import Any

ShelfRow = tuple[str, "str | None", "str | None", tuple, "tuple[str, ...] | None", tuple, dict]


def _shelf(name: str, hub_id: str | None, hub_config: str | None, text: tuple[tuple[str, ...], ...],
           labels: tuple[str, ...] | None, metrics: tuple[str, ...], **kw: Any) -> ShelfRow:
    """One row: name, hub id, hub config, text segments, label names (None: regression), metrics, extra fields.
    :mod:`scalearn_cli.tasks` makes each a ``TaskSpec`` whose test split is ``test``."""
    return (name, hub_id, hub_config, text, labels, metrics, kw)


_TEXT = (("text",),)
_STARS = ("1 star", "2 stars", "3 stars", "4 stars", "5 stars")
_NLI3 = ("entailment", "neutral", "contradiction")
_MULTI = ("accuracy", "macro_f1")
_TWEET = ("macro_f1", "accuracy")  # TweetEval's tables score macro-F1

SHELF_ROWS: tuple[ShelfRow, ...] = (
    # topic
    _shelf("20_newsgroups", "SetFit/20_newsgroups", None, _TEXT, (
        "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware",
        "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles", "rec.sport.baseball", "rec.sport.hockey",
        "sci.crypt", "sci.electronics", "sci.med", "sci.space", "soc.religion.christian", "talk.politics.guns",
        "talk.politics.mideast", "talk.politics.misc", "talk.religion.misc"), _MULTI),
    _shelf("ag_news", "fancyzhx/ag_news", None, _TEXT, ("World", "Sports", "Business", "Sci/Tech"), _MULTI),
    _shelf("dbpedia_14", "fancyzhx/dbpedia_14", None, (("content",),), (
        "Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder", "MeanOfTransportation", "Building",
        "NaturalPlace", "Village", "Animal", "Plant", "Album", "Film", "WrittenWork"), _MULTI),
    # sentiment
    _shelf("amazon_reviews_multi_en", "mteb/amazon_reviews_multi", "en", _TEXT, _STARS, _MULTI),
    _shelf("cr", "SetFit/SentEval-CR", None, _TEXT, ("negative", "positive"), ("accuracy",)),
    _shelf("imdb", "stanfordnlp/imdb", None, _TEXT, ("neg", "pos"), ("accuracy",)),
    _shelf("mpqa", None, None, _TEXT, ("negative", "positive"), ("accuracy",)),
    _shelf("rotten_tomatoes", "cornell-movie-review-data/rotten_tomatoes", None, _TEXT, ("neg", "pos"), ("accuracy",)),
    _shelf("sst5", "SetFit/sst5", None, _TEXT,
           ("very negative", "negative", "neutral", "positive", "very positive"), _MULTI),
    _shelf("subj", "SetFit/subj", None, _TEXT, ("objective", "subjective"), ("accuracy",)),
    _shelf("yelp_review_stars", "Yelp/yelp_review_full", None, _TEXT, _STARS, _MULTI),
    # tweets
    _shelf("tweet_eval_emoji", "cardiffnlp/tweet_eval", "emoji", _TEXT, (
        "\u2764", "\U0001f60d", "\U0001f602", "\U0001f495", "\U0001f525", "\U0001f60a", "\U0001f60e", "\u2728",
        "\U0001f499", "\U0001f618", "\U0001f4f7", "\U0001f1fa\U0001f1f8", "\u2600", "\U0001f49c", "\U0001f609",
        "\U0001f4af", "\U0001f601", "\U0001f384", "\U0001f4f8", "\U0001f61c"), _TWEET),
    _shelf("tweet_eval_emotion", "cardiffnlp/tweet_eval", "emotion", _TEXT, ("anger", "joy", "optimism", "sadness"),
           _TWEET),
    _shelf("tweet_eval_hate", "cardiffnlp/tweet_eval", "hate", _TEXT, ("not-hate", "hate"), _TWEET),
    _shelf("tweet_eval_irony", "cardiffnlp/tweet_eval", "irony", _TEXT, ("non_irony", "irony"), _TWEET),
    _shelf("tweet_eval_offensive", "cardiffnlp/tweet_eval", "offensive", _TEXT, ("not-offensive", "offensive"),
           _TWEET),
    _shelf("tweet_eval_sentiment", "cardiffnlp/tweet_eval", "sentiment", _TEXT, ("negative", "neutral", "positive"),
           _TWEET),
    # emotion
    _shelf("emotion", "dair-ai/emotion", None, _TEXT, ("sadness", "joy", "love", "anger", "fear", "surprise"), _MULTI),
    _shelf("go_emotions", "google-research-datasets/go_emotions", "simplified", _TEXT, (
        "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity", "desire",
        "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear", "gratitude", "grief", "joy",
        "love", "nervousness", "optimism", "pride", "realization", "relief", "remorse", "sadness", "surprise",
        "neutral"), ("macro_f1", "micro_f1"), label_field="labels", problem_type="multi_label_classification"),
    # question type
    _shelf("trec", "CogComp/trec", None, _TEXT, ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"), _MULTI,
           label_field="coarse_label"),
    # NLI (mnli: GLUE's spec)
    _shelf("anli", "facebook/anli", None, (("premise",), ("hypothesis",)), _NLI3, _MULTI),
    _shelf("scitail", "allenai/scitail", "tsv_format", (("premise",), ("hypothesis",)), ("entails", "neutral"),
           ("accuracy",)),
    _shelf("sick_entailment", "RobZamp/sick", None, (("sentence_A",), ("sentence_B",)), _NLI3, _MULTI),
    # similarity, paraphrase (boolq: SuperGLUE's spec)
    _shelf("sick_relatedness", "RobZamp/sick", None, (("sentence_A",), ("sentence_B",)), None, ("pearson", "spearman"),
           label_field="relatedness_score"),
    _shelf("paws", "google-research-datasets/paws", "labeled_final", (("sentence1",), ("sentence2",)),
           ("not_paraphrase", "paraphrase"), ("accuracy",)),
)

#: Every built-in task's family; tasks not named here are "other" (SuperGLUE's rest, the demo tasks).
FAMILIES: dict[str, str] = {
    "cola": "acceptability", "sst2": "sentiment", "mrpc": "paraphrase", "qqp": "paraphrase", "stsb": "similarity",
    "mnli": "nli", "qnli": "nli", "rte": "nli", "wnli": "nli", "snli": "nli", "boolq": "qa", "cb": "nli",
    "superglue-rte": "nli", "copa": "reasoning", "wic": "word_sense", "wsc": "coreference",
    "20_newsgroups": "topic", "ag_news": "topic", "dbpedia_14": "topic",
    "amazon_reviews_multi_en": "sentiment", "cr": "sentiment", "imdb": "sentiment", "mpqa": "sentiment",
    "rotten_tomatoes": "sentiment", "sst5": "sentiment", "subj": "sentiment", "yelp_review_stars": "sentiment",
    "tweet_eval_emoji": "tweets", "tweet_eval_emotion": "tweets", "tweet_eval_hate": "tweets",
    "tweet_eval_irony": "tweets", "tweet_eval_offensive": "tweets", "tweet_eval_sentiment": "tweets",
    "emotion": "emotion", "go_emotions": "emotion", "trec": "question_type",
    "anli": "nli", "scitail": "nli", "sick_entailment": "nli", "sick_relatedness": "similarity", "paws": "paraphrase",
}

#: How the shelf's files differ from the Hub dataset a spec names (the loader follows the files).
SHELF_NOTES: dict[str, str] = {
    "20_newsgroups": "headers removed, bodies cut at 2,000 characters; label order alphabetical (SetFit's)",
    "ag_news": "text = title + ' ' + description; the pool is the official test split",
    "dbpedia_14": "content only (no title), tokenised; pool is a 14,000-row per-class sample",
    "amazon_reviews_multi_en": "text = title + blank line + body; label = stars - 1; pool is the official train",
    "mpqa": "no Hub dataset: --data-dir only",
    "subj": "own 80/10/10 split (SetFit/subj has another)",
    "yelp_review_stars": "another sample of Yelp reviews than Yelp/yelp_review_full; label = stars - 1",
    "tweet_eval_sentiment": "trained on the official test rows: never evaluate on tweet_eval/sentiment test",
    "trec": "coarse labels (column coarse_label)",
    "go_emotions": "multi-label (column labels: a list of ids); capped samples of the official splits (10,000 train)",
    "anli": "the pool is ANLI's test rounds R1-R3 (column 'round' kept)",
    "mnli": "shelf folder: the pool is dev_matched; test = the folder's validation file",
    "scitail": "the pool is the tsv_format test split; labels entails/neutral",
    "sick_relatedness": "same rows as sick_entailment; target = relatedness_score (1-5)",
    "paws": "the pool is labeled_final validation + test: never evaluate on PAWS validation",
    "boolq": "shelf folder: the pool is BoolQ validation; test = the folder's validation file",
}


def family(name: str) -> str:
    """The family of a built-in task (``other`` when it has none)."""
    return FAMILIES.get(name, "other")
