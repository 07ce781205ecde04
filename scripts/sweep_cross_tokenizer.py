"""Chapter 07c's cross-tokenizer comparison: writes data/cross_tokenizer_sweep.json.

    python scripts/sweep_cross_tokenizer.py [--jobs 2]     # ~4 CPU-minutes on one thread

The teacher is chapter 07's shipped tiny GPT, whose tokens are *words*. The student family
uses a byte-pair tokenizer of ``PIECES`` tokens trained (by the ``tokenizers`` library) on the
2,000 transfer stories of offset 0, so common words are one token and rarer ones are split
("little" becomes "li t t le"). Same student architecture, recipe and epochs as chapter 07
(scripts/sweep_language_models.py); run ``i`` = the chapter at ``KD_BOOK_SEED_OFFSET=i``. Students:

* ``words, scratch`` and ``words, forward KL``: word tokens, as in chapter 07 (same tokenizer as
  the teacher);
* ``pieces, scratch``: sub-word tokens, cross-entropy only;
* ``pieces, ULD``: sub-word tokens, cross-entropy + ``ULD_WEIGHT`` x ULD (Boizard et al. 2024)
  at the positions that predict the first piece of a word (:func:`kd_lib.lm.uld.word_alignment`);
* ``pieces, ULD 0.1``: the same with a tenth of the weight;
* ``pieces, mapped KL``: the teacher's next-word distribution projected onto the student's first
  pieces (:func:`kd_lib.lm.uld.first_piece_map`), then cross-entropy + forward KL at the same
  positions: what ULD's sorting throws away (which token is which), kept;
* ``pieces, ULD shuffled``: the control, the same loss with each story's teacher outputs taken
  from *another* story of the transfer set (same shapes, same amount of teacher signal, the
  wrong context), which separates information about the story from a regulariser.

All are scored on the same 300 validation stories with :func:`kd_lib.lm.metrics.kl_per_word`
(KL to the true language per word, from whole-story log-probabilities, comparable across
tokenizers); word students also with chapter 07's per-token ``kl_to_truth``.
"""
import argparse
import json
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import torch

import kd_lib
from kd_lib.lab import DATA_DIR
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.lm.hf import train_tokenizer
from kd_lib.lm.language import BOS, EOS, PAD, Grammar, lm_data
from kd_lib.lm.metrics import kl_per_word, kl_to_truth, story_log_probs
from kd_lib.lm.topk import CachedTeacher, topk_cache
from kd_lib.lm.uld import AlignedTeacher, first_piece_map, uld_distillation_loss, uld_loss, word_alignment
from kd_lib.metrics import predict_logits
from kd_lib.pretrained import load_pretrained

import sweep_language_models as lm  # chapter 07's constants, student and recipe

NUMERICS = use_portable_numerics()  # before the first tensor operation

OFFSETS = list(range(8))
PIECES, MAX_PIECES, ULD_WEIGHT, SHUFFLE_SEED = 160, 160, 1.0, 7


def words_of(grammar: Grammar, tokens: torch.Tensor):
    special = {grammar.index[PAD], grammar.index[BOS], grammar.index[EOS]}
    return [[grammar.vocab[i] for i in row.tolist() if i not in special] for row in tokens]


def piece_student(vocab_size: int, seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=MAX_PIECES, **lm.STUDENT))


def tokenizer_for(grammar: Grammar):
    stories = grammar.sample(lm.TRANSFER_STORIES, seed=lm.TRANSFER_SEED)  # offset 0's, for every run
    return train_tokenizer([" ".join(w) for w in words_of(grammar, stories)], vocab_size=PIECES, kind="bpe")


def runs_at(offset: int):
    torch.set_num_threads(1)
    grammar, teacher = Grammar(), load_pretrained("tiny_gpt_teacher")
    tokenizer = tokenizer_for(grammar)
    seed = lm.seeds_at(offset)["student"]
    stories = grammar.sample(lm.TRANSFER_STORIES, seed=lm.seeds_at(offset)["transfer"])
    word_train = lm_data(stories)
    val_stories = grammar.sample(lm.VAL_STORIES, seed=lm.VAL_SEED)
    word_val = lm_data(val_stories)
    x_pieces, y_pieces, positions = word_alignment(tokenizer, words_of(grammar, stories), MAX_PIECES)
    val_pieces = word_alignment(tokenizer, words_of(grammar, val_stories), MAX_PIECES)[:2]
    teacher_logits = predict_logits(teacher, word_train[0])
    shuffled = torch.randperm(len(stories), generator=torch.Generator().manual_seed(SHUFFLE_SEED + offset))
    # the control: another story's teacher outputs, at the positions that story's words would have
    other = teacher_logits[shuffled]
    cached = CachedTeacher(word_train[0], topk_cache(teacher, word_train[0], k=grammar.vocab_size,
                                                     dtype=torch.float32))

    def words(**kwargs):
        student = lm.make_student(grammar, seed)
        kd_lib.train(student, word_train, config=lm.recipe(seed), **kwargs)
        return student

    vocab_map = first_piece_map(tokenizer, grammar.vocab, {EOS: tokenizer.eos_token_id})

    def pieces(teacher_outputs=None, weight=ULD_WEIGHT, mapped=False):
        student = piece_student(len(tokenizer), seed)
        kwargs = {}
        if teacher_outputs is not None:
            aligned = AlignedTeacher(x_pieces, teacher_outputs, positions, vocab_map=vocab_map if mapped else None)
            divergence = kd_lib.kd_loss if mapped else uld_loss
            kwargs = dict(teacher=aligned, loss_fn=partial(uld_distillation_loss, weight=weight,
                                                           divergence=divergence))
        kd_lib.train(student, (x_pieces, y_pieces), config=lm.recipe(seed), **kwargs)
        return student

    plans = [("words, scratch", "words", lambda: words()),
             ("words, forward KL", "words", lambda: words(teacher=cached, loss_fn=kd_lib.kd_loss)),
             ("pieces, scratch", "pieces", lambda: pieces()),
             ("pieces, ULD", "pieces", lambda: pieces(teacher_logits)),
             ("pieces, ULD 0.1", "pieces", lambda: pieces(teacher_logits, weight=0.1)),
             ("pieces, mapped KL", "pieces", lambda: pieces(teacher_logits, weight=1.0, mapped=True)),
             ("pieces, ULD shuffled", "pieces", lambda: pieces(other))]
    rows = []
    for name, kind, plan in plans:
        started = time.process_time()
        student = plan()
        val = word_val if kind == "words" else val_pieces
        row = {"method": name, "tokens": kind, "offset": offset, "seed": seed,
               "kl_per_word": round(kl_per_word(grammar, *word_val, story_log_probs(student, *val)), 6),
               "params": kd_lib.metrics.count_parameters(student)}
        if kind == "words":
            row["kl_to_truth"] = round(kl_to_truth(student, grammar, *word_val), 6)
        row["cpu_seconds"] = round(time.process_time() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA_DIR / "cross_tokenizer_sweep.json")
    parser.add_argument("--offsets", type=int, nargs="*", default=OFFSETS)
    parser.add_argument("--jobs", type=int, default=1, help="processes, one offset each (1 thread each)")
    args = parser.parse_args()
    started = time.time()
    if args.jobs > 1:
        with Pool(args.jobs) as pool:
            per_offset = pool.map(runs_at, args.offsets)
    else:
        per_offset = [runs_at(offset) for offset in args.offsets]
    runs = [row for rows in per_offset for row in rows]
    grammar, teacher = Grammar(), load_pretrained("tiny_gpt_teacher")
    word_val = lm_data(grammar.sample(lm.VAL_STORIES, seed=lm.VAL_SEED))
    tokenizer = tokenizer_for(grammar)
    val_words = words_of(grammar, grammar.sample(lm.VAL_STORIES, seed=lm.VAL_SEED))
    pieces = sum(len(tokenizer(" ".join(w))["input_ids"]) for w in val_words)
    result = {
        "made_by": "python scripts/sweep_cross_tokenizer.py",
        "settings": {"offsets": args.offsets, "pieces_vocab": PIECES, "uld_weight": ULD_WEIGHT,
                     "shuffle_seed": SHUFFLE_SEED, "uld_weights": [ULD_WEIGHT, 0.1], "student": lm.STUDENT, "epochs": lm.EPOCHS, "recipe": lm.RECIPE,
                     "transfer_stories": lm.TRANSFER_STORIES, "val_stories": lm.VAL_STORIES, "threads": 1,
                     "torch": torch.__version__, "numerics": str(NUMERICS)},
        "tokenizer": {"vocab_size": len(tokenizer), "pieces_per_word": round(pieces / sum(map(len, val_words)), 4),
                      "example": tokenizer.convert_ids_to_tokens(tokenizer(" ".join(val_words[0][:12]))["input_ids"])},
        "teacher": {"kl_per_word": round(kl_per_word(grammar, *word_val, story_log_probs(teacher, *word_val)), 6),
                    "kl_to_truth": round(kl_to_truth(teacher, grammar, *word_val), 6),
                    "params": kd_lib.metrics.count_parameters(teacher)},
        "runs": runs,
        "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 1),
        "wall_seconds": round(time.time() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}: {len(runs)} runs, {result['cpu_seconds']} CPU-s")


if __name__ == "__main__":
    main()
