"""Chapter 11's research experiments, five runs each: writes data/research_sweep.json.

    python scripts/sweep_research.py          # ~4 CPU-minutes on one thread

Chapter 11 loads the JSON, re-trains one run of each part live at its seed offset and asserts
that it reproduces the stored one (exactly, where the file holds that offset and the numerics
match), so the file cannot drift from the code.

**Seeds are the chapter's seed offsets.** Run ``i`` is what the chapter computes at
``KD_BOOK_SEED_OFFSET=i``: chapter 07's seeds (student ``shifted_seed(0)``, transfer stories
``grammar.sample(2000, seed=shifted_seed(10))``, validation stories seed 11) and chapter 07's
one-block GPT student and recipe (``scripts/sweep_language_models.py``), so that the runs pair
with that script's stored runs of the same offset. Every student is scored like chapter 07's
(``lm_metrics``: validation cross-entropy, KL to the true language, grammatical share of 1,000
samples).

* ``architecture``: a recurrent student of the tiny GPT teacher, a one-layer GRU
  (:class:`GRULM`, about the GPT student's size), distilled with forward KL (``kd_loss``) from
  the cached teacher, and the same GRU trained from scratch on the same stories.
* ``objective``: the GPT student distilled with ``kd_lib.total_variation`` (T = 1 and T = 2)
  instead of forward KL; paired with the stored forward-KL runs of data/lm_objectives_sweep.json, which
  the script first reproduces at offset 0 (``check``).
* ``capability``: one rule of the grammar, "played with his/her" (the possessive agrees with the
  hero's name, given sentences earlier). Two GPT students distilled with forward KL on the same
  number of tokens: the general transfer set, and *targeted* stories (general stories that
  contain "played", drawn from ``shifted_seed(30)``). Each is scored on the rule (mean
  probability of the right possessive at every "played with" of 300 fixed probe stories, seed
  12) besides the usual metrics.
"""
import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn

import kd_lib
from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.lm.language import Grammar, lm_data
from kd_lib.lm.metrics import lm_metrics
from kd_lib.metrics import count_parameters, predict_logits
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.lab import DATA_DIR
from kd_lib.pretrained import load_pretrained
from kd_lib.lm.topk import CachedTeacher, topk_cache

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

OFFSETS = list(range(5))
SEED_STRIDE = 1000  # kd_lib.lab.notebook.SEED_STRIDE
STUDENT_SEED, TRANSFER_SEED, VAL_SEED, TARGETED_SEED, PROBE_SEED = 0, 10, 11, 30, 12
TRANSFER_STORIES, VAL_STORIES, NUM_SAMPLES = 2000, 300, 1000
POOL_STORIES, PROBE_POOL, PROBE_STORIES = 60000, 20000, 300
STUDENT = dict(n_layer=1, n_head=2, n_embd=48)  # scripts/sweep_language_models.py
GRU = dict(width=32, hidden=76)
EPOCHS = 6
RECIPE = dict(batch_size=16, lr=1e-2, lr_schedule="cosine", warmup_steps=20, max_grad_norm=1.0)
RULE = ("played", "with")  # the token after these two is his/her: agreement with the hero's name


class GRULM(nn.Module):
    """A recurrent language model: embedding, one GRU layer, a linear read-out to the vocabulary."""

    def __init__(self, vocab_size: int, width: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.gru = nn.GRU(width, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, tokens):
        states, _ = self.gru(self.embed(tokens))
        return self.out(states)


def seeds_at(offset: int) -> dict:
    shift = SEED_STRIDE * offset
    return {"student": STUDENT_SEED + shift, "transfer": TRANSFER_SEED + shift,
            "targeted": TARGETED_SEED + shift}


def gpt_student(grammar: Grammar, seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=grammar.vocab_size, block_size=grammar.max_len, **STUDENT))


def gru_student(grammar: Grammar, seed: int) -> GRULM:
    torch.manual_seed(seed)
    return GRULM(grammar.vocab_size, **GRU)


def recipe(seed: int) -> kd_lib.TrainConfig:
    return kd_lib.TrainConfig(num_epochs=EPOCHS, seed=seed, progress=False, cache_teacher_logits=False,
                              device="cpu", **RECIPE)


def tokens_in(data) -> int:
    return int((data[1] != -100).sum())


def targeted_stories(grammar: Grammar, budget: int, seed: int):
    """General stories that contain the rule, as many as fit in ``budget`` target tokens."""
    pool = lm_data(grammar.sample(POOL_STORIES, seed=seed))
    has_rule = (pool[0] == grammar.index[RULE[0]]).any(1)
    x, y = pool[0][has_rule], pool[1][has_rule]
    keep = int(((y != -100).sum(1).cumsum(0) <= budget).sum())
    return x[:keep], y[:keep]


def rule_positions(grammar: Grammar, inputs):
    """Positions whose input is the second word of RULE after the first: the next token is his/her."""
    before = torch.nn.functional.pad(inputs, (1, 0))[:, :-1]
    return (inputs == grammar.index[RULE[1]]) & (before == grammar.index[RULE[0]])


def rule_probe(grammar: Grammar):
    """300 fixed stories with the rule (seed 12), for scoring it."""
    pool = lm_data(grammar.sample(PROBE_POOL, seed=PROBE_SEED))
    has_rule = rule_positions(grammar, pool[0]).any(1)
    return pool[0][has_rule][:PROBE_STORIES]


def rule_score(model, grammar: Grammar, probe) -> float:
    """Mean probability of the right possessive (the truth puts all its mass on it)."""
    where = rule_positions(grammar, probe)
    truth = grammar.next_token_probs(probe)[where]
    assert bool((truth.max(-1).values == 1).all()), "the rule's next token is determined"
    probs = torch.softmax(predict_logits(model, probe), -1)[where]
    return float(probs.gather(1, truth.argmax(-1, keepdim=True)).mean())


def score(model, grammar, val, probe, seed) -> dict:
    metrics = lm_metrics(model, grammar, *val, num_samples=NUM_SAMPLES, seed=seed)
    return {**{k: round(v, 6) for k, v in metrics.items()}, "rule": round(rule_score(model, grammar, probe), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA_DIR / "research_sweep.json")
    parser.add_argument("--offsets", type=int, nargs="*", default=OFFSETS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.process_time()
    grammar, teacher = Grammar(), load_pretrained("tiny_gpt_teacher").cpu()
    val = lm_data(grammar.sample(VAL_STORIES, seed=VAL_SEED))
    probe = rule_probe(grammar)
    stored_kl = json.loads((DATA_DIR / "lm_objectives_sweep.json").read_text())["runs"]
    runs, check = [], {}
    for offset in args.offsets:
        seeds = seeds_at(offset)
        seed = seeds["student"]
        general = lm_data(grammar.sample(TRANSFER_STORIES, seed=seeds["transfer"]))
        targeted = targeted_stories(grammar, tokens_in(general), seeds["targeted"])
        cached = CachedTeacher(general[0], topk_cache(teacher, general[0], k=grammar.vocab_size,
                                                        dtype=torch.float32))
        cached_targeted = CachedTeacher(targeted[0], topk_cache(teacher, targeted[0], k=grammar.vocab_size,
                                                                 dtype=torch.float32))
        trainings = {
            ("architecture", "GRU, forward KL"): (gru_student, general, dict(teacher=cached, loss_fn=kd_lib.kd_loss)),
            ("architecture", "GRU, scratch"): (gru_student, general, {}),
            ("objective", "total variation, T=1"): (gpt_student, general,
                                                    dict(teacher=cached, loss_fn=kd_lib.total_variation)),
            ("objective", "total variation, T=2"): (gpt_student, general, dict(
                teacher=cached, loss_fn=partial(kd_lib.total_variation, temperature=2.0))),
            ("capability", "general stories"): (gpt_student, general, dict(teacher=cached, loss_fn=kd_lib.kd_loss)),
            ("capability", "targeted stories"): (gpt_student, targeted,
                                                 dict(teacher=cached_targeted, loss_fn=kd_lib.kd_loss)),
        }
        for (part, name), (make, data, kwargs) in trainings.items():
            run_started = time.process_time()
            student = make(grammar, seed)
            kd_lib.train(student, data, config=recipe(seed), **kwargs)
            runs.append({"part": part, "name": name, "offset": offset, "seed": seed,
                         "parameters": count_parameters(student), "stories": len(data[0]),
                         "tokens": tokens_in(data), **score(student, grammar, val, probe, seed),
                         "cpu_seconds": round(time.process_time() - run_started, 1)})
            print(json.dumps(runs[-1]), flush=True)
            if (part, name) == ("capability", "general stories"):  # chapter 07's forward-KL student
                same = [r for r in stored_kl if r["objective"] == "forward KL" and r["offset"] == offset]
                check[offset] = bool(same) and same[0]["kl_to_truth"] == runs[-1]["kl_to_truth"]
    if not all(check.values()):
        raise SystemExit(f"the forward-KL student does not reproduce data/lm_objectives_sweep.json: {check}")
    result = {
        "made_by": "python scripts/sweep_research.py",
        "settings": {"offsets": args.offsets, "seed_stride": SEED_STRIDE, "student_seed": STUDENT_SEED,
                     "transfer_seed": TRANSFER_SEED, "val_seed": VAL_SEED, "targeted_seed": TARGETED_SEED,
                     "probe_seed": PROBE_SEED, "transfer_stories": TRANSFER_STORIES, "val_stories": VAL_STORIES,
                     "pool_stories": POOL_STORIES, "probe_pool": PROBE_POOL, "probe_stories": PROBE_STORIES,
                     "num_samples": NUM_SAMPLES, "student": STUDENT, "gru": GRU, "epochs": EPOCHS,
                     "recipe": RECIPE, "rule": list(RULE), "threads": 1, "torch": torch.__version__,
                     "numerics": str(NUMERICS)},
        "teacher": score(teacher, grammar, val, probe, 0),
        "reproduces_lm_objectives_sweep": {str(k): v for k, v in check.items()},
        "runs": runs,
        "cpu_seconds": round(time.process_time() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}: {len(runs)} runs in {result['cpu_seconds']} CPU-s")


if __name__ == "__main__":
    main()
