"""Speed benchmarks for kd_lib: `make bench` (or `python benchmarks/run.py`).

Writes benchmarks/results.json and benchmarks/results.png. Three measurements, all on MNIST-1D
(4,000 training samples, the shipped CNN teacher, an MLP-256x256 student), one torch thread:

1. kd_lib.train against a minimal hand-written PyTorch distillation loop doing the same work
   (same model, data, batch size, loss, cached teacher logits): throughput ratio (goal >= 0.95),
   measured in ``--pairs`` pairs run back to back in alternating order (plain first in even
   pairs, kd_lib first in odd ones), so drifts in machine load hit both; the result is the mean
   of the per-pair ratios with a 95% t-interval (kd_lib.lab.stats.mean_interval), and the spread.
2. cached teacher logits vs running the teacher every step: speedup.
3. a small student (MLP 64, ~20x fewer parameters) vs the teacher: inference latency at batch
   1 and 256, and the ratio.

Other timings are the median of several interleaved repeats, so a busy machine affects both sides.
"""
import argparse
import functools
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import kd_lib
from kd_lib.data import make_mnist1d
from kd_lib.metrics import count_parameters, latency
from kd_lib.models import MLP, MLPConfig
from kd_lib.pretrained import load_pretrained
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.lab.stats import mean_interval

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

HERE = Path(__file__).resolve().parent
TEMPERATURE, ALPHA, BATCH = 4.0, 0.5, 128


def plain_loop(student, teacher, inputs, labels, num_epochs, seed=0):
    """The loop a reader would write by hand: cached teacher logits, shuffled batches, Adam."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    with torch.no_grad():
        teacher.eval()
        teacher_logits = teacher(inputs)
    student.train()
    for _ in range(num_epochs):
        for idx in torch.randperm(len(inputs), generator=generator).split(BATCH):
            optimizer.zero_grad()
            student_logits = student(inputs[idx])
            soft = F.kl_div(F.log_softmax(student_logits / TEMPERATURE, -1), F.softmax(teacher_logits[idx] / TEMPERATURE, -1),
                            reduction="batchmean") * TEMPERATURE**2
            loss = ALPHA * F.cross_entropy(student_logits, labels[idx]) + (1 - ALPHA) * soft
            loss.backward()
            optimizer.step()


def kd_lib_loop(student, teacher, inputs, labels, num_epochs, seed=0, cache=True):
    config = kd_lib.TrainConfig(num_epochs=num_epochs, batch_size=BATCH, seed=seed, progress=False, device="cpu",
                                cache_teacher_logits=cache)
    kd_lib.train(student, (inputs, labels), teacher=teacher, config=config,
                 loss_fn=functools.partial(kd_lib.distillation_loss, temperature=TEMPERATURE, alpha=ALPHA))


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def student():
    torch.manual_seed(0)
    return MLP(MLPConfig(hidden=(256, 256)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=20, help="paired plain / kd_lib runs for the loop ratio")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = make_mnist1d(5000, seed=42)
    teacher = load_pretrained("mnist1d_cnn")
    x, y = split.x_train, split.y_train
    samples = len(x) * args.epochs

    plain_loop(student(), teacher, x, y, 1)  # warm-up: first calls pay one-off allocation costs
    kd_lib_loop(student(), teacher, x, y, 1)
    run = {"plain": lambda: plain_loop(student(), teacher, x, y, args.epochs),
           "kd_lib": lambda: kd_lib_loop(student(), teacher, x, y, args.epochs),
           "kd_lib_uncached": lambda: kd_lib_loop(student(), teacher, x, y, args.epochs, cache=False)}
    times = {name: [] for name in run}
    pair_ratios = []  # plain seconds / kd_lib seconds = kd_lib throughput / plain throughput
    for pair in range(args.pairs):  # back to back, alternating which goes first
        order = ("plain", "kd_lib") if pair % 2 == 0 else ("kd_lib", "plain")
        seconds = {name: timed(run[name]) for name in order}
        for name in order:
            times[name].append(seconds[name])
        pair_ratios.append(seconds["plain"] / seconds["kd_lib"])
    for _ in range(args.repeats):
        times["kd_lib_uncached"].append(timed(run["kd_lib_uncached"]))
    ratio = mean_interval(pair_ratios)
    median = {k: statistics.median(v) for k, v in times.items()}
    throughput = {k: samples / v for k, v in median.items()}

    torch.manual_seed(0)
    small = MLP(MLPConfig(hidden=(64,)))
    latencies = {}
    for batch in (1, 256):
        inputs = split.x_test[:batch]
        latencies[batch] = {"teacher_s": latency(teacher, inputs, repeats=200), "student_s": latency(small, inputs, repeats=200)}
        latencies[batch]["teacher_over_student"] = latencies[batch]["teacher_s"] / latencies[batch]["student_s"]

    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__, "threads": 1,
                    "numerics": str(NUMERICS)},
        "setup": {"train_samples": len(x), "epochs": args.epochs, "repeats": args.repeats, "pairs": args.pairs,
                  "batch_size": BATCH,
                  "trained_student_params": count_parameters(student()), "latency_student_params": count_parameters(small),
                  "teacher_params": count_parameters(teacher)},
        "seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "samples_per_second": {k: round(v) for k, v in throughput.items()},
        "kd_lib_over_plain_throughput": round(ratio.mean, 3),
        "kd_lib_over_plain_interval_95": [round(ratio.low, 3), round(ratio.high, 3)],
        "kd_lib_over_plain_per_pair": {"min": round(min(pair_ratios), 3), "max": round(max(pair_ratios), 3),
                                       "sd": round(statistics.stdev(pair_ratios), 3), "pairs": len(pair_ratios)},
        "cached_over_uncached_speedup": round(median["kd_lib_uncached"] / median["kd_lib"], 2),
        "latency": {str(b): {k: round(v, 7) for k, v in d.items()} for b, d in latencies.items()},
    }
    path = HERE / "results.json"  # shared with benchmarks/losses.py: keep its keys
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(results)
    path.write_text(json.dumps(merged, indent=2) + "\n")
    plot(results)
    print(json.dumps({k: results[k] for k in ("samples_per_second", "kd_lib_over_plain_throughput", "kd_lib_over_plain_interval_95",
                                              "kd_lib_over_plain_per_pair", "cached_over_uncached_speedup")}, indent=2))
    print("latency teacher/student:", {b: round(d["teacher_over_student"], 1) for b, d in latencies.items()})


def plot(results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=80)
    names = ["plain", "kd_lib", "kd_lib_uncached"]
    labels = ["hand-written loop\n(cached teacher)", "kd_lib.train\n(cached teacher)", "kd_lib.train\n(teacher every step)"]
    left.bar(labels, [results["samples_per_second"][n] / 1000 for n in names], color=["grey", "tab:blue", "tab:orange"])
    left.set_ylabel("training throughput (thousand samples/s)")
    low, high = results["kd_lib_over_plain_interval_95"]
    left.set_title(f"Distillation training of an MLP-256x256, 1 CPU thread\n"
                   f"kd_lib / plain = {results['kd_lib_over_plain_throughput']} (95% CI {low} to {high})")
    batches = list(results["latency"])
    width = 0.38
    for offset, who, color in ((-width / 2, "teacher", "tab:red"), (width / 2, "student", "tab:green")):
        right.bar([i + offset for i in range(len(batches))], [results["latency"][b][f"{who}_s"] * 1e3 for b in batches], width,
                  label=f"{who} ({results['setup'][('latency_' if who == 'student' else '') + who + '_params']:,} params)", color=color)
    right.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    right.set_yscale("log")
    right.set_ylabel("median latency per forward pass (ms, log scale)")
    right.set_title("Inference latency, 1 CPU thread")
    right.legend()
    figure.tight_layout()
    figure.savefig(HERE / "results.png")


if __name__ == "__main__":
    main()
