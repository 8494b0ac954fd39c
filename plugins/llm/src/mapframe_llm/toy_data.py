"""Toy data sets, generated procedurally and deterministically (nothing is downloaded).

* Text corpora (:data:`CORPORA`, :func:`corpus`, :func:`split_corpus`): two invented
  languages with their own function words, verbs, adjectives and word order (``lang_a`` is
  SVO with gender agreement, ``lang_b`` is SOV with particles; they share one noun lexicon)
  and arithmetic statements (``arith``), deterministic by seed.
* Text-classification tasks generated from templates (:data:`CLS_TASKS`,
  :func:`classification_data`): ``sentiment`` and ``topic`` label the same kind of news
  sentence by conflicting cues, so their fine-tunes compete for the encoder; ``question``
  tells questions from statements by word order.
* Writers and readers of the files the evaluators read (:func:`write_text_documents`,
  :func:`write_jsonl`, :func:`read_jsonl`).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mapframe.errors import ConfigError

__all__ = [
    "CLS_TASKS",
    "CORPORA",
    "classification_data",
    "corpus",
    "read_jsonl",
    "split_corpus",
    "write_jsonl",
    "write_text_documents",
]

# --- corpora ------------------------------------------------------------------------------

#: Nouns both invented languages borrow (so the languages differ by grammar and function
#: words, and a fine-tune on one of them moves weights the other one uses too).
_NOUNS = ("taru", "neko", "piso", "vala", "kiri", "mona", "rudo", "seli", "bako", "fenu",
          "lumi", "davo", "sora", "tilo", "garu", "peni")
# lang_a: determiner - noun - adjective (the adjective agrees with the determiner's gender),
# verb between subject and object, optional adverb, clauses joined by "e".
_A_DET_M = ("lo", "un", "esto")
_A_DET_F = ("la", "una", "esta")
_A_ADJ = ("bel", "gran", "nov", "ros", "ver", "alt", "car", "fort")
_A_VERB = ("vidat", "manjat", "portat", "amat", "trovat", "lavat", "cantat", "parlat")
_A_ADV = ("ogi", "sempre", "tardi", "bene")
# lang_b: time word first, subject + "wa", adjective before noun, object + "o", verb last;
# "to" joins two subjects; "ni" marks a place.
_B_TIME = ("kinou", "kyou", "ashita", "maiasa")
_B_ADJ = ("okina", "shiroi", "hayai", "kuroi", "chisai", "atsui", "aoi", "takai")
_B_VERB = ("mimasu", "tabemasu", "motimasu", "kaimasu", "mitsukemasu", "araimasu",
           "utaimasu", "yobimasu")
_B_PLACE = ("yama", "umi", "machi", "ie")
_ARITH_OPS = ("plus", "minus", "times")

#: The corpora :func:`corpus` generates, with a description each.
CORPORA: dict[str, str] = {
    "lang_a": "invented SVO language: 'la neko bela vidat lo taru alto ogi .'",
    "lang_b": "invented SOV language with particles: 'kyou neko wa okina taru o mimasu .'",
    "arith": "arithmetic statements: '7 plus 5 equals 12 .'",
}


def _sentence_a(rng: random.Random) -> str:
    # every noun has a fixed gender (even index: feminine); determiner and adjective agree
    def phrase() -> list[str]:
        i = rng.randrange(len(_NOUNS))
        fem = i % 2 == 0
        words = [rng.choice(_A_DET_F if fem else _A_DET_M), _NOUNS[i]]
        if rng.random() < 0.6:
            words.append(rng.choice(_A_ADJ) + ("a" if fem else "o"))
        return words

    words = [*phrase(), rng.choice(_A_VERB), *phrase()]
    if rng.random() < 0.4:
        words.append(rng.choice(_A_ADV))
    if rng.random() < 0.3:
        words += ["e", rng.choice(_A_VERB), *phrase()]
    return " ".join(words) + " ."


def _sentence_b(rng: random.Random) -> str:
    # the verb depends on the object noun's class (its index modulo 4: two verbs each)
    words: list[str] = []
    if rng.random() < 0.5:
        words.append(rng.choice(_B_TIME))
    words.append(rng.choice(_NOUNS))
    if rng.random() < 0.3:
        words += ["to", rng.choice(_NOUNS)]
    words.append("wa")
    if rng.random() < 0.3:
        words += [rng.choice(_B_PLACE), "ni"]
    if rng.random() < 0.6:
        words.append(rng.choice(_B_ADJ))
    j = rng.randrange(len(_NOUNS))
    words += [_NOUNS[j], "o", _B_VERB[2 * (j % 4) + rng.randrange(2)]]
    return " ".join(words) + " ."


def _sentence_arith(rng: random.Random) -> str:
    op = rng.choice(_ARITH_OPS)
    if op == "times":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        c = a * b
    else:
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        if op == "minus" and b > a:
            a, b = b, a
        c = a + b if op == "plus" else a - b
    return f"{a} {op} {b} equals {c} ."


_SENTENCES: dict[str, Callable[[random.Random], str]] = {
    "lang_a": _sentence_a, "lang_b": _sentence_b, "arith": _sentence_arith,
}


def corpus(name: str, n: int, seed: int = 0, sentences: tuple[int, int] = (3, 6)) -> list[str]:
    """``n`` documents of the corpus ``name`` (one of :data:`CORPORA`), each one line of
    ``sentences[0]`` to ``sentences[1]`` sentences; the same ``(name, n, seed)`` always gives
    the same documents, and the first ``k`` documents do not depend on ``n``."""
    if name not in _SENTENCES:
        raise ConfigError(f"unknown toy corpus {name!r}; available: {', '.join(CORPORA)}")
    if n < 0:
        raise ConfigError(f"number of documents must be >= 0, got {n}")
    rng = random.Random(f"{name}:{seed}")
    make = _SENTENCES[name]
    lo, hi = sentences
    return [" ".join(make(rng) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def split_corpus(name: str, n_train: int, n_test: int, seed: int = 0
                 ) -> tuple[list[str], list[str]]:
    """Disjoint ``(train, test)`` documents of ``name``: drawn with different seeds, and any
    test document that also occurs in train is dropped (so ``test`` may be a few short)."""
    train = corpus(name, n_train, seed=2 * seed)
    seen = set(train)
    test = [t for t in corpus(name, n_test, seed=2 * seed + 1) if t not in seen]
    return train, test


def write_text_documents(path: str | os.PathLike[str], texts: Sequence[str]) -> Path:
    """Write documents as plain text, separated by one blank line (each document must not
    contain a blank line itself)."""
    p = Path(path)
    for t in texts:
        if "\n\n" in t.strip():
            raise ValueError("a document holds a blank line: it would be split in two")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n\n".join(t.strip() for t in texts) + "\n", encoding="utf-8")
    return p


def write_jsonl(path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(dict(r), ensure_ascii=False) + "\n")
    return p


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects of a JSONL file (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --- text classification --------------------------------------------------------------

#: Classification tasks of :func:`classification_data`: task -> label names (id order).
CLS_TASKS: dict[str, tuple[str, ...]] = {
    "sentiment": ("negative", "positive"),
    "topic": ("sports", "cooking", "tech"),
    "question": ("statement", "question"),
}

#: Topic -> subjects of the news sentences.
_NEWS_SUBJECTS: dict[str, tuple[str, ...]] = {
    "sports": ("the team", "the striker", "the coach", "the goalkeeper", "our club",
               "the captain", "the runner", "the referee"),
    "cooking": ("the chef", "my grandmother", "the baker", "our cook", "the kitchen team",
                "my flatmate", "the student", "the host"),
    "tech": ("the new laptop", "the update", "the server", "the app", "the compiler",
             "the router", "the database", "the startup"),
}
#: (topic, polarity) -> actions: each action carries both labels at once.
_NEWS_ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sports", "positive"): (
        "scored a stunning late goal", "won the final", "broke the world record",
        "saved a penalty", "beat the champions", "signed a star player",
        "won the league title", "kept a clean sheet", "took the gold medal",
        "lifted the trophy"),
    ("sports", "negative"): (
        "missed an open goal", "lost the derby", "was sent off early", "conceded five goals",
        "got injured in training", "was relegated", "lost every away game",
        "fouled the keeper badly", "was knocked out in the first round",
        "finished last in the race"),
    ("cooking", "positive"): (
        "baked perfect bread", "made a delicious soup", "roasted tender vegetables",
        "served a sweet dessert", "cooked a tasty curry", "whipped fluffy pancakes",
        "grilled juicy steaks", "made a rich chocolate cake", "prepared a fresh salad",
        "baked crispy pastries"),
    ("cooking", "negative"): (
        "burnt the sauce", "served cold soup", "ruined the cake", "overcooked the pasta",
        "dropped the roast", "made a salty stew", "undercooked the chicken",
        "scorched the rice", "served stale bread", "curdled the custard"),
    ("tech", "positive"): (
        "fixed the security bug", "shipped a faster chip", "made the app much quicker",
        "released a stable version", "doubled the battery life", "solved the outage",
        "cut the loading time in half", "blocked the malware attack",
        "launched a smooth update", "restored the network in minutes"),
    ("tech", "negative"): (
        "crashed after the patch", "lost all our data", "leaked user passwords",
        "froze during the demo", "drained the battery", "broke the login page",
        "corrupted the backup", "kept rebooting all night", "deleted the wrong files",
        "let the website go down"),
}
#: Polarity -> words of the optional comment of a one-clause sentence.
_NEWS_WORDS: dict[str, tuple[str, ...]] = {
    "positive": ("wonderful", "great", "delightful", "excellent", "amazing", "lovely",
                 "superb", "fantastic", "brilliant", "marvellous"),
    "negative": ("terrible", "awful", "disappointing", "horrible", "dreadful", "miserable",
                 "dismal", "appalling", "pathetic", "atrocious"),
}
_NEWS_WHEN = ("", "last night", "on saturday", "yesterday", "this morning", "again")
_NEWS_TEMPLATES = ("{s} .", "i read that {s} .", "news today : {s} .", "apparently {s} .",
                   "{s} , people say .")
#: Share of the news sentences that contrast two events ("A , but B"): the topic is A's,
#: the sentiment B's, so the two tasks read opposite clauses of them. The sentiment and
#: topic fine-tunes compete for the encoder even without them (same sentences, different
#: cues); these sharpen the competition: the more there are, the more the best compromise
#: merge loses on each task (0.15 keeps one within about 10 points of both fine-tunes).
_CLS_CONTRAST = 0.15
_Q_SUBJ = ("the store", "your brother", "the train", "this road", "the meeting", "the printer",
           "the museum", "our teacher", "the bakery", "the bus")
_Q_PRED = ("open on sunday", "coming to dinner", "late again", "closed for repairs",
           "ready now", "working today", "far from here", "on time", "busy this week",
           "free tomorrow")
_Q_TAIL = ("", " again", " this year", " right now", " after lunch", " these days")
_Q_VERB_SUBJ = ("you", "they", "we", "she", "he")
_Q_VERB = ("like the new park", "know the answer", "play the piano", "need more time",
           "live near the station", "want some tea", "remember the address", "drive to work")


def _opposite(polarity: str) -> str:
    return "negative" if polarity == "positive" else "positive"


def _news_clause(topic: str, polarity: str, rng: random.Random) -> str:
    return f"{rng.choice(_NEWS_SUBJECTS[topic])} {rng.choice(_NEWS_ACTIONS[(topic, polarity)])}"


def _news_sentence(topic: str, polarity: str, rng: random.Random) -> str:
    """A news sentence whose topic is ``topic`` and whose sentiment is ``polarity``.

    With probability :data:`_CLS_CONTRAST`, two events in contrast: ``A , but B .``, A of
    ``topic`` with the opposite polarity, B of another topic with ``polarity`` (the topic
    is what the sentence opens with, the sentiment what it concludes with). Otherwise one
    event, ``subject action [when]`` in a template (the action decides both labels; half
    the subjects are drawn from any topic), sometimes with a comment that agrees
    (", superb .") or negates the opposite (", not awful at all .").
    """
    topics = CLS_TASKS["topic"]
    if rng.random() < _CLS_CONTRAST:
        other = rng.choice([t for t in topics if t != topic])
        return (f"{_news_clause(topic, _opposite(polarity), rng)} , but "
                f"{_news_clause(other, polarity, rng)} .")
    subj = rng.choice(_NEWS_SUBJECTS[topic if rng.random() < 0.5 else rng.choice(topics)])
    act = rng.choice(_NEWS_ACTIONS[(topic, polarity)])
    sent = " ".join(w for w in (subj, act, rng.choice(_NEWS_WHEN)) if w)
    text = rng.choice(_NEWS_TEMPLATES).format(s=sent)
    kind = rng.random()
    if kind < 0.3:
        text = f"{text[:-2]} , {rng.choice(_NEWS_WORDS[polarity])} ."
    elif kind < 0.45:
        text = f"{text[:-2]} , not {rng.choice(_NEWS_WORDS[_opposite(polarity)])} at all ."
    return text


def _cls_example(task: str, label: str, rng: random.Random) -> str:
    if task == "sentiment":  # the same kind of sentences as topic's, read for their polarity
        return _news_sentence(rng.choice(CLS_TASKS["topic"]), label, rng)
    if task == "topic":  # ... and for their topic
        return _news_sentence(label, rng.choice(CLS_TASKS["sentiment"]), rng)
    # question vs statement, by word order and auxiliaries (no "?" to make it less trivial)
    tail = rng.choice(_Q_TAIL)
    if rng.random() < 0.5:
        subj, pred = rng.choice(_Q_SUBJ), rng.choice(_Q_PRED)
        return (f"is {subj} {pred}" if label == "question" else f"{subj} is {pred}") + tail
    subj, verb = rng.choice(_Q_VERB_SUBJ), rng.choice(_Q_VERB)
    if label == "question":
        aux = "does" if subj in ("she", "he") else "do"
        return f"{aux} {subj} {verb}{tail}"
    if subj in ("she", "he"):
        first, _, rest = verb.partition(" ")
        verb = (first[:-1] + "ies" if first.endswith("y") and first[-2] not in "aeiou"
                else first + ("es" if first.endswith(("sh", "ch", "o")) else "s")) + " " + rest
    return f"{subj} {verb}{tail}"


def classification_data(task: str, split: str, n: int | None = None, seed: int = 0
                        ) -> tuple[list[str], list[str], list[str]]:
    """``(texts, labels, label names)`` of a generated classification task of
    :data:`CLS_TASKS`; ``split`` ``train`` (default 480 examples) or ``test`` (default 200),
    drawn with different seeds; balanced labels; test texts never occur in train.

    ``sentiment`` (negative, positive) and ``topic`` (sports, cooking, tech) label the same
    kind of news sentence, each carrying a topic and a polarity, for one or the other: the
    sentiment task must ignore the topic and the topic task the polarity. Most sentences
    report one event ("apparently the chef burnt the sauce , not superb at all ."): its
    action decides both labels, half the subjects are drawn from any topic, some sentences
    add a comment that agrees or negates the opposite. The others (15 %,
    :data:`_CLS_CONTRAST`) contrast two events of different topics and polarities ("the
    team lost the derby , but the server solved the outage ."): the topic is the first
    event's, the sentiment the second's (the clause after "but"), so the two tasks need
    opposite readings of the same words. Reading the same sentences for different cues
    makes their fine-tunes compete for the encoder, and the contrasts sharpen it: merging
    them trades one task for the other. ``question``: questions and statements told apart
    by word order only (no "?").
    """
    if task not in CLS_TASKS:
        raise ConfigError(f"unknown toy classification task {task!r}; available: "
                          f"{', '.join(CLS_TASKS)}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be train or test, got {split!r}")
    names = list(CLS_TASKS[task])
    n = n if n is not None else (480 if split == "train" else 200)
    avoid: set[str] = set()
    if split == "test":
        avoid = set(classification_data(task, "train", seed=seed)[0])
    rng = random.Random(f"{task}:{split}:{seed}")
    texts, labels = [], []
    for i in range(n):
        label = names[i % len(names)]
        for _ in range(1000):
            text = _cls_example(task, label, rng)
            if text not in avoid:
                break
        else:  # pragma: no cover - the template spaces are far larger than the splits
            raise RuntimeError(f"{task}: could not draw a test text unseen in train")
        texts.append(text)
        labels.append(label)
    order = list(range(n))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order], names
