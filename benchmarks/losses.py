"""Memory and speed of kd_lib's token-level losses at real vocabulary sizes (`make bench`).

    python benchmarks/losses.py [--repeats 5] [--positions 4096] [--vocab 32000 128000] [--dtypes ...]

(`make bench` runs one process per vocabulary size and dtype: memory freed by one configuration
is not always returned to the system, and the largest ones need a fresh process.)

For ``[positions, vocab]`` logits in float32 and bfloat16, one forward + backward of the loss:

* **peak memory above the inputs**, gradient included, in units of one logits tensor
  (:func:`kd_lib.lab.memory.peak_memory`: allocator bytes, on CPU from the profiler's records;
  on CUDA, ``max_memory_allocated``), for
  - ``kd_lib.kd_loss`` chunked (the automatic default above 2^24 elements),
  - ``kd_lib.kd_loss`` with ``chunk_size=0`` (the plain code),
  - the textbook ``F.kl_div(F.log_softmax(z/T), F.softmax(v/T), reduction="batchmean") * T**2``
    (on float32 copies, as kd_lib computes),
  - ``kd_lib.generalized_jsd`` chunked and plain, and TRL's ``generalized_jsd_loss`` (GKD) at the
    same shapes when ``trl`` can be imported (the Makefile runs this script a second time from a
    separate environment with TRL; the book's environment does not have it);
* **speed**: the median seconds of ``repeats`` interleaved forward + backward passes, and the
  ratio plain / chunked (goal >= 0.9);
* **equality**: the largest difference in value and gradient between chunked and plain.

A configuration whose estimated need (its ratio at the first vocabulary size times the logits'
size, plus the two inputs) would exceed 60% of the available memory is skipped, and says so.
Results merge into benchmarks/results.json under "losses" (and "losses_trl"); the figure is
benchmarks/losses.png.
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
from kd_lib.lab.memory import peak_memory
from kd_lib.lab.numerics import use_portable_numerics

NUMERICS = use_portable_numerics()  # before the first tensor operation

HERE = Path(__file__).resolve().parent
TEMPERATURE, BETA = 2.0, 0.5
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def textbook_kd(z, v):
    log_q = F.log_softmax(z.float() / TEMPERATURE, dim=-1)
    p = F.softmax(v.float() / TEMPERATURE, dim=-1)
    return F.kl_div(log_q, p, reduction="batchmean") * TEMPERATURE**2


def trl_jsd():
    """TRL's GKD loss, or None when TRL is not installed here."""
    try:
        from trl.experimental.gkd import GKDTrainer
    except ImportError:
        try:
            from trl import GKDTrainer
        except ImportError:
            return None
    def loss(z, v):  # labels with no padding: TRL's "batchmean" then averages over tokens, as kd_lib does
        labels = torch.zeros(1, z.shape[0], dtype=torch.long, device=z.device)
        return GKDTrainer.generalized_jsd_loss(z[None], v[None], labels, beta=BETA, temperature=TEMPERATURE)

    return loss


def methods(with_trl: bool):
    kd = functools.partial(kd_lib.kd_loss, temperature=TEMPERATURE)
    jsd = functools.partial(kd_lib.generalized_jsd, beta=BETA, temperature=TEMPERATURE)
    found = {
        "kd_loss chunked": lambda z, v: kd(z, v),
        "kd_loss plain": lambda z, v: kd(z, v, chunk_size=0),
        "textbook F.kl_div": textbook_kd,
        "generalized_jsd chunked": lambda z, v: jsd(z, v),
        "generalized_jsd plain": lambda z, v: jsd(z, v, chunk_size=0),
    }
    trl = trl_jsd()
    if with_trl and trl is not None:
        found["TRL generalized_jsd_loss"] = trl
    return found, trl is not None


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 2**63


def forward_backward(loss, z, v):
    loss(z, v).backward()


def agreement(chunked, plain, z, v):
    values, grads = [], []
    for loss in (chunked, plain):
        z.grad = None
        forward_backward(loss, z, v)
        values.append(float(loss(z.detach(), v)))
        grads.append(z.grad.float())
    z.grad = None
    return abs(values[0] - values[1]), float((grads[0] - grads[1]).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--positions", type=int, default=4096)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128000])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--trl-only", action="store_true", help="only TRL and kd_lib's JSD (the TRL environment)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    found, has_trl = methods(with_trl=True)
    if args.trl_only:
        if not has_trl:
            raise SystemExit("--trl-only: trl cannot be imported in this environment")
        found = {k: f for k, f in found.items() if "jsd" in k.lower()}
    rows, ratio_at_first = [], {}
    key = "losses_trl" if args.trl_only else "losses"
    path = HERE / "results.json"
    for row in json.loads(path.read_text()).get(key, {}).get("rows", []) if path.exists() else []:
        if "peak_over_logits" in row:  # ratios measured earlier at other sizes guard this run too
            ratio_at_first.setdefault((row["method"], row["dtype"]), row["peak_over_logits"])
    for vocab in args.vocab:
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            generator = torch.Generator().manual_seed(0)
            z = (torch.randn(args.positions, vocab, generator=generator) * 2).to(dtype).requires_grad_()
            v = (torch.randn(args.positions, vocab, generator=generator) * 2).to(dtype)
            one = z.numel() * z.element_size()
            memory, seconds = {}, {name: [] for name in found}
            for name, loss in found.items():
                estimate = ratio_at_first.get((name, dtype_name))
                if estimate is not None and (estimate + 2) * one > 0.6 * available_bytes():
                    print(f"skipped {name} {dtype_name} V={vocab}: needs about {estimate * one / 2**30:.1f} GiB")
                    continue
                z.grad = None  # freed before the measurement starts, so the peak is above the inputs alone
                memory[name] = peak_memory(lambda: forward_backward(loss, z, v))
                ratio_at_first.setdefault((name, dtype_name), memory[name].ratio(one))
            for _ in range(args.repeats):  # interleaved: machine load hits every method alike
                for name in memory:
                    z.grad = None
                    started = time.perf_counter()
                    forward_backward(found[name], z, v)
                    seconds[name].append(time.perf_counter() - started)
            z.grad = None
            for name in memory:
                rows.append({"vocab": vocab, "positions": args.positions, "dtype": dtype_name, "method": name,
                             "peak_over_logits": round(memory[name].ratio(one), 3),
                             "peak_bytes": memory[name].peak, "logits_bytes": one,
                             "median_seconds": round(statistics.median(seconds[name]), 4),
                             "seconds": [round(s, 4) for s in seconds[name]]})
                print(f"V={vocab:>6} {dtype_name:>8} {name:<26} peak {memory[name].ratio(one):5.2f}x one logits "
                      f"tensor ({memory[name].peak / 2**20:7.0f} MiB), {statistics.median(seconds[name]):.3f} s")
            pairs = [(f"{family} chunked", f"{family} plain", family) for family in ("kd_loss", "generalized_jsd")]
            pairs.append(("generalized_jsd chunked", "TRL generalized_jsd_loss", "kd_lib vs TRL"))
            for chunked, plain, family in pairs:
                if chunked in memory and plain in memory:
                    value_diff, grad_diff = agreement(found[chunked], found[plain], z, v)
                    speed = statistics.median(seconds[plain]) / statistics.median(seconds[chunked])
                    rows.append({"vocab": vocab, "positions": args.positions, "dtype": dtype_name,
                                 "method": f"{family}: {chunked} vs {plain}", "speed_ratio": round(speed, 3),
                                 "max_value_diff": value_diff, "max_grad_diff": grad_diff})
                    print(f"    {plain} / {chunked} time {speed:.2f}, |value diff| {value_diff:.2e}, "
                          f"max |grad diff| {grad_diff:.2e}")
            del z, v
    results = json.loads(path.read_text()) if path.exists() else {}
    done = {(v, d) for v in args.vocab for d in args.dtypes}
    earlier = [r for r in results.get(key, {}).get("rows", []) if (r["vocab"], r["dtype"]) not in done]
    rows = sorted(earlier + rows, key=lambda r: (r["vocab"], list(DTYPES).index(r["dtype"])))  # keeps other runs' rows
    results[key] = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1,
                                "numerics": str(NUMERICS), "trl": _trl_version()},
                    "temperature": TEMPERATURE, "beta": BETA, "repeats": args.repeats, "rows": rows}
    path.write_text(json.dumps(results, indent=2) + "\n")
    try:
        plot(results)
    except ImportError:  # the TRL environment has no matplotlib; the book's environment plots
        print("no matplotlib here: benchmarks/losses.png not redrawn")


def _trl_version():
    try:
        import trl
        return trl.__version__
    except ImportError:
        return None


def plot(results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for key in ("losses", "losses_trl") for r in results.get(key, {}).get("rows", [])
            if "peak_over_logits" in r]
    names = list(dict.fromkeys(r["method"] for r in rows))
    configs = list(dict.fromkeys((r["vocab"], r["dtype"]) for r in rows))
    figure, ax = plt.subplots(figsize=(10, 4), dpi=80)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        heights = [next((r["peak_over_logits"] for r in rows if r["method"] == name and (r["vocab"], r["dtype"]) == c),
                        0.0) for c in configs]
        ax.bar([j + (i - (len(names) - 1) / 2) * width for j in range(len(configs))], heights, width, label=name)
    ax.axhline(1.25, color="black", linestyle="--", linewidth=1, label="goal: 1.25x")
    ax.set_xticks(range(len(configs)), [f"V = {v:,}\n{d}" for v, d in configs])
    ax.set_ylabel("peak memory above inputs\n(x one logits tensor)")
    ax.set_title(f"One forward + backward over {rows[0]['positions']:,} positions, 1 CPU thread" if rows else "")
    ax.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(HERE / "losses.png")


if __name__ == "__main__":
    main()
