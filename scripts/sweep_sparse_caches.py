"""Chapter 07c's bias table of sparse teacher caches: writes data/sparse_cache_sweep.json.

    python scripts/sweep_sparse_caches.py [--jobs 2]     # ~12 CPU-minutes on one thread

The setting is chapter 07's (scripts/sweep_language_models.py): the shipped tiny GPT teacher,
the one-block student, the same recipe and epochs, run ``i`` = the chapter at
``KD_BOOK_SEED_OFFSET=i`` (its own initial weights, batch order and 2,000 transfer stories; the
300 validation stories are the same for all). Only the teacher's cache changes. At each storage
budget of ``4k`` bytes per token, k in ``KS``:

* top-k, renormalised (``tail="none"``), float16 values + int16 ids;
* top-k + uniform tail (the missing mass spread over the other tokens);
* top-k + tail bucket (TRL's server teacher: KL over k + 1 categories);
* ``n = 2k`` tokens sampled from the teacher (random-sampling KD, Anshumann et al. 2025), int16
  ids, drawn once per run from ``SAMPLE_SEED`` + offset shift;

plus the full float32 cache (every probability) as the reference. Every student is trained
with :func:`kd_lib.lm.sparse.sparse_kd_loss` (forward KL, T = 1) and scored on the validation
stories: KL to the true language, calibration against the truth
(:func:`kd_lib.lm.metrics.calibration_to_truth`: ECE, overconfidence, entropy gap) and
cross-entropy.
"""
import argparse
import json
import time
from multiprocessing import Pool
from pathlib import Path

import torch

import kd_lib
from kd_lib.lab import DATA_DIR
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.lm.language import Grammar, lm_data
from kd_lib.lm.metrics import calibration_to_truth, kl_to_truth
from kd_lib.lm.sparse import SparseCachedTeacher, sample_cache, sparse_kd_loss
from kd_lib.lm.topk import TopKCache, topk_cache
from kd_lib.pretrained import load_pretrained

import sweep_language_models as lm  # chapter 07's constants, student and recipe

NUMERICS = use_portable_numerics()  # before the first tensor operation

OFFSETS = list(range(6))
KS = [1, 2, 4, 8]
SAMPLE_SEED = 20
METHODS = ["top-k renormalised", "top-k + uniform tail", "top-k + tail bucket", "sampled 2k"]


def caches(teacher, x_train, full: TopKCache, k: int, offset: int):
    """The four caches of one budget (4k bytes per token), as (name, cache, tail)."""
    top = TopKCache(full.values[..., :k].half(), full.indices[..., :k].short(), full.vocab_size)
    sampled = sample_cache(teacher, x_train, 2 * k, seed=SAMPLE_SEED + lm.SEED_STRIDE * offset)
    return [("top-k renormalised", top, "none"), ("top-k + uniform tail", top, "uniform"),
            ("top-k + tail bucket", top, "bucket"), ("sampled 2k", sampled, "none")]


def train_one(grammar, x_train, y_train, cache, tail, seed):
    student = lm.make_student(grammar, seed)
    kd_lib.train(student, (x_train, y_train), teacher=SparseCachedTeacher(x_train, cache, tail),
                 loss_fn=sparse_kd_loss, config=lm.recipe(seed))
    return student


def score(student, grammar, val):
    metrics = {"kl_to_truth": kl_to_truth(student, grammar, *val), **calibration_to_truth(student, grammar, *val),
               "val_ce": kd_lib.evaluate(student, *val)["eval_loss"]}
    return {k: round(v, 6) for k, v in metrics.items()}


def runs_at(offset: int):
    torch.set_num_threads(1)
    grammar, teacher = Grammar(), load_pretrained("tiny_gpt_teacher")
    seeds = lm.seeds_at(offset)
    x_train, y_train = lm_data(grammar.sample(lm.TRANSFER_STORIES, seed=seeds["transfer"]))
    val = lm.validation(grammar)
    full = topk_cache(teacher, x_train, k=grammar.vocab_size, dtype=torch.float32)
    settings = [("full cache", grammar.vocab_size, full, "none", full.nbytes)]
    for k in KS:
        for name, cache, tail in caches(teacher, x_train, full, k, offset):
            settings.append((name, k, cache, tail, cache.nbytes))
    rows = []
    for name, k, cache, tail, nbytes in settings:
        started = time.process_time()
        student = train_one(grammar, x_train, y_train, cache, tail, seeds["student"])
        rows.append({"method": name, "k": k, "offset": offset, "seed": seeds["student"],
                     "bytes_per_token": round(nbytes / x_train.numel(), 3), **score(student, grammar, val),
                     "cpu_seconds": round(time.process_time() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA_DIR / "sparse_cache_sweep.json")
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
    result = {
        "made_by": "python scripts/sweep_sparse_caches.py",
        "settings": {"offsets": args.offsets, "ks": KS, "methods": ["full cache", *METHODS],
                     "sample_seed": SAMPLE_SEED, "seed_stride": lm.SEED_STRIDE, "student": lm.STUDENT,
                     "epochs": lm.EPOCHS, "recipe": lm.RECIPE, "transfer_stories": lm.TRANSFER_STORIES,
                     "val_stories": lm.VAL_STORIES, "threads": 1, "torch": torch.__version__,
                     "numerics": str(NUMERICS)},
        "teacher": score(teacher, grammar, lm.validation(grammar)),
        "runs": runs,
        "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 1),
        "wall_seconds": round(time.time() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}: {len(runs)} runs, {result['cpu_seconds']} CPU-s")


if __name__ == "__main__":
    main()
