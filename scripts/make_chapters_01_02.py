"""Write book/01_soft_targets.ipynb and book/02_distillation_loss.ipynb (without outputs).

    python scripts/make_chapters_01_02.py
    python scripts/execute_notebooks.py book/01_soft_targets.ipynb book/02_distillation_loss.ipynb

The notebooks are the source of truth once committed; this script is how they were first made,
and regenerating overwrites any edit made to them directly.
"""
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def setup_cell() -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    block = text.split("### The setup cell", 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0].strip()


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(text: str, *tags: str):
    cell = nbformat.v4.new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def solution(text: str):
    """A solution in a MyST dropdown (closed on the site)."""
    return md("```{dropdown} Solution\n" + text.strip("\n") + "\n```")


def write(name: str, cells) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = cells
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(notebook)
    path = ROOT / "book" / name
    nbformat.write(notebook, path)
    lengths = [len(c.source.splitlines()) for c in cells if c.cell_type == "code"]
    lengths.sort()
    print(f"{path.relative_to(ROOT)}: {len(cells)} cells, {len(lengths)} code cells, "
          f"median code cell {lengths[len(lengths) // 2]} lines, longest {lengths[-1]}")


# ================================================================================ chapter 01
CHAPTER_01 = [
md(r"""
# 1. Soft targets and temperature

A classifier ends in logits, and a softmax turns them into probabilities. Distillation trains a
student to reproduce a teacher's probabilities, not only the correct label
{cite}`hinton2015distilling`. This chapter looks at what those probabilities hold, on a real
trained teacher, and at the knob that exposes it: the temperature $T$.

**In this chapter you will**

- compute soft targets $\operatorname{softmax}(z/T)$ from a trained teacher's logits with
  `kd_lib.soften`, and check it against a two-line softmax;
- compare real soft targets with the syllabus's made-up example;
- read the teacher's "dark knowledge": which wrong digits it finds similar, and whether its own
  mistakes follow that similarity;
- measure how $T$ moves the entropy of the soft targets, and check both limits,
  $T \to \infty$ and $T \to 0$, numerically;
- move $T$ with a slider and watch one example's distribution change.

The chapter trains nothing and runs in well under a minute on one CPU thread.
"""),
code(setup_cell()),
md(r"""
## A teacher and its logits

The data is MNIST-1D {cite}`greydanus2020mnist1d`: each example is a 1-D signal of 40 samples
built from one of ten digit templates, then shifted, scaled, sheared and noised; the task is to
name the digit. It is small enough for a laptop and hard enough that models differ. The book
ships a 1-D CNN teacher trained on the training split (`scripts/train_mnist1d_teacher.py`);
we load it instead of training one, and compute its logits on the test split.
"""),
code(r"""
import math
from collections import Counter

import matplotlib.pyplot as plt
import torch
from matplotlib.colors import LogNorm
from mnist1d.data import get_templates

from kd_lib.data import make_mnist1d
from kd_lib.metrics import accuracy, count_parameters, predict_logits
from kd_lib.pretrained import load_pretrained
"""),
code(r"""
data = make_mnist1d(5000, seed=42).to(device)
teacher = load_pretrained("mnist1d_cnn", device=device)
teacher_logits = predict_logits(teacher, data.x_test).cpu()  # [1000, 10], eval mode
labels = data.y_test.cpu()
print(data)
print(f"teacher: {count_parameters(teacher):,} parameters, "
      f"test accuracy {accuracy(teacher_logits, labels):.1%}")
"""),
md(r"""
We follow one test example through the chapter. Its logits are unbounded real numbers, and
their scale matters for everything that follows, so we also print how spread out the logits are
over the whole test set.
"""),
code(r"""
EXAMPLE = 0
z = teacher_logits[EXAMPLE]
true_digit = labels[EXAMPLE].item()
print(f"example {EXAMPLE}: a {true_digit}; logits", [round(x, 1) for x in z.tolist()])
spread = teacher_logits.max(dim=-1).values - teacher_logits.min(dim=-1).values
print(f"largest minus smallest logit: median {spread.median():.1f}, max {spread.max():.1f}")
"""),
md(r"""
## Softmax with a temperature

For logits $z \in \mathbb{R}^C$ ($C = 10$ classes here) and a temperature $T > 0$, the soft
target is

$$
q_i(T) = \frac{\exp(z_i / T)}{\sum_{j=1}^{C} \exp(z_j / T)}, \qquad i = 1, \dots, C .
$$

$T = 1$ is the ordinary softmax. Dividing by $T > 1$ shrinks the differences between logits,
so the probabilities move towards each other; $T < 1$ pulls them apart. Hinton, Vinyals and
Dean {cite}`hinton2015distilling` call these probabilities *soft targets*.

Two lines of PyTorch compute them. Subtracting each row's largest logit first changes nothing,
because a softmax ignores a constant added to every logit, and it keeps `exp` from
overflowing. We check this inline version against `kd_lib.soften`, the function every later
chapter uses, on all test examples and a range of temperatures.
"""),
code(r"""
def softmax_with_temperature(logits, temperature):
    scaled = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    return scaled.exp() / scaled.exp().sum(dim=-1, keepdim=True)

CHECKED = [0.1, 0.5, 1, 2, 4, 8, 100]
for T in CHECKED:
    inline = softmax_with_temperature(teacher_logits, T)
    assert torch.allclose(inline, kd_lib.soften(teacher_logits, T), atol=1e-6)
print(f"softmax(z / T) == kd_lib.soften(z, T) on all test examples at T = {CHECKED}")
"""),
md(r"""
Here is our example's soft target at six temperatures (one row per $T$, one column per class):
"""),
code(r"""
TABLE_TEMPERATURES = [0.5, 1, 2, 4, 8, 16]
print("class:    " + " ".join(f"{c:>5}" for c in range(10)))
for T in TABLE_TEMPERATURES:
    print(f"T = {T:>4}: " + " ".join(f"{p:5.3f}" for p in kd_lib.soften(z, T).tolist()))
"""),
code(r"""
fig, axes = plt.subplots(1, 4, figsize=(10, 2.8), sharey=True)
colors = ["C3" if c == true_digit else "C0" for c in range(10)]
for ax, T in zip(axes, [1, 2, 4, 8]):
    ax.bar(range(10), kd_lib.soften(z, T), color=colors)
    ax.set(title=f"T = {T}", xlabel="class (digit)", xticks=range(10))
axes[0].set_ylabel("probability")
fig.suptitle(f"Soft targets of one test example (a {true_digit}, red) at four temperatures")
fig.tight_layout()
plt.show()
"""),
md(r"""
At $T = 1$ almost all the mass sits on the true class; as $T$ grows, the wrong classes appear,
in an order that was in the logits all along. Temperature never changes that order: dividing
by a positive number keeps the ranking of the logits, so the predicted class (and the
teacher's accuracy) is the same at every $T$. The cell below checks this for every test example.
"""),
code(r"""
ranking = teacher_logits.argsort(dim=-1)
for T in TABLE_TEMPERATURES:
    soft = kd_lib.soften(teacher_logits, T)
    assert torch.equal(soft.argmax(dim=-1), teacher_logits.argmax(dim=-1))
    if T >= 1:  # below T = 1 the smallest probabilities underflow to 0 in float32 and tie
        assert torch.equal(soft.argsort(dim=-1), ranking)
print("same arg-max for every test example at every T; same full ranking for T >= 1")
"""),
code(r"""
top_probability = [kd_lib.soften(z, T).max().item() for T in TABLE_TEMPERATURES]
# flatter as T grows:
assert all(a > b for a, b in zip(top_probability, top_probability[1:]))
print("the example's top probability falls from "
      f"{top_probability[0]:.3f} to {top_probability[-1]:.3f}")
"""),
md(r"""
## Real soft targets are sharper than the syllabus's example

The syllabus illustrates a soft target with `[0.05, 0.85, 0.08, 0.02]`: a top class at 0.85
and visible mass on the others. That is an illustration, not a measurement. Here is what the
teacher's soft targets look like over the whole test set: the median probability of the top
class, the share of examples whose top class gets more than 0.99, and the median total
probability of the nine wrong classes.
"""),
code(r"""
print("    T   median top prob   top prob > 0.99   median wrong-class mass")
for T in [1, 2, 3, 4, 8]:
    soft = kd_lib.soften(teacher_logits, T)
    top = soft.max(dim=-1).values
    wrong_mass = 1 - soft.gather(1, labels[:, None]).squeeze(1)
    print(f"{T:5}   {top.median():15.4f}   {(top > 0.99).float().mean():15.1%}   "
          f"{wrong_mass.median():23.5f}")
"""),
md(r"""
At $T = 1$ the real soft targets are nearly one-hot: for a typical example the wrong classes
together get a tiny fraction of a percent. What temperature makes a typical soft target look
like the syllabus's? The median top-class probability falls steadily with $T$, so a bisection
finds where it equals 0.85.
"""),
code(r"""
def median_top_probability(T):
    return kd_lib.soften(teacher_logits, T).max(dim=-1).values.median().item()

low, high = 1.0, 32.0
for _ in range(40):
    middle = (low + high) / 2
    low, high = (middle, high) if median_top_probability(middle) > 0.85 else (low, middle)
print(f"median top probability: {median_top_probability(1):.5f} at T = 1; 0.85 at T = {low:.2f}")
assert median_top_probability(1) > 0.99 and 3 <= low <= 5
"""),
md(r"""
So the syllabus's example is what this teacher's soft targets look like only once they are
softened by a temperature inside the syllabus's "typical" range of 3 to 5; at $T = 1$ the
information in the wrong classes is almost invisible. That is the reason for the temperature.
"""),
md(r"""
## Dark knowledge: which digits look alike

Hinton et al. call the small probabilities of wrong classes *dark knowledge*: a teacher that
gives a 2 some probability of being a 7 and almost none of being a 6 is saying how it sees the
classes {cite}`hinton2015distilling`. To see this structure for the whole teacher, we average
the soft targets at $T = 4$ over the test examples of each digit. To keep the teacher's own
mistakes out of this picture (we test against them below), we average only over examples it
classifies correctly.
"""),
code(r"""
SIMILARITY_T = 4
predicted = teacher_logits.argmax(dim=-1)
correct = predicted == labels
soft = kd_lib.soften(teacher_logits, SIMILARITY_T)
# row: true digit, column: class in the soft target
class_average = torch.stack([soft[(labels == d) & correct].mean(dim=0) for d in range(10)])
assert torch.allclose(class_average.sum(dim=1), torch.ones(10))
"""),
code(r"""
fig, ax = plt.subplots(figsize=(5.4, 4.4))
image = ax.imshow(class_average, norm=LogNorm(vmin=1e-3, vmax=1), cmap="viridis")
ax.set(xticks=range(10), yticks=range(10), xlabel="class in the soft target",
       ylabel="true digit", title=f"Average soft target per digit at T = {SIMILARITY_T}\n"
       "(correctly classified test examples)")
ax.grid(False)
fig.colorbar(image, ax=ax, label="mean probability (log scale)")
plt.show()
"""),
md(r"""
The diagonal holds the true class. Off the diagonal the colours are far from uniform: each digit
spreads its remaining probability over a few particular classes. The next cell names, for each
digit, the wrong class that gets the most probability, and compares it with the average wrong
class.
"""),
code(r"""
wrong = class_average.clone().fill_diagonal_(0)  # keep only the wrong classes
most_similar = wrong.argmax(dim=1)
for d in range(10):
    print(f"digit {d}: most similar {most_similar[d].item()} (prob {wrong[d].max():.3f}; "
          f"average wrong class {wrong[d].sum() / 9:.3f})")
picked_back = [d for d in range(10) if most_similar[most_similar[d]] == d]
mutual = sorted({tuple(sorted((d, most_similar[d].item()))) for d in picked_back})
print("pairs that pick each other:", mutual)
assert all(wrong[d].max() > 2 * wrong[d].sum() / 9 for d in range(10)) and len(mutual) >= 2
"""),
md(r"""
Every digit has a favourite wrong class that gets more than twice the average wrong-class
probability, and several pairs pick each other. In MNIST-1D, "similar" means similar 1-D
waveforms, not similar handwriting: the dataset starts from ten hand-made templates. Here are
the templates of the mutual pair with the most shared probability.
"""),
code(r"""
pair = max(mutual, key=lambda ab: wrong[ab[0], ab[1]] + wrong[ab[1], ab[0]])
templates = get_templates()
fig, ax = plt.subplots(figsize=(5.4, 3))
for digit in pair:
    ax.plot(templates["t"], templates["x"][digit], marker="o", label=f"digit {digit}")
ax.set(xlabel="position along the signal (template units)",
       ylabel="signal (template units)", title=f"MNIST-1D templates of the pair {pair}")
ax.legend()
plt.show()
"""),
md(r"""
The two templates share much of their shape, which is what the teacher's soft targets report.
If the soft targets really describe how the teacher sees the classes, its mistakes should land
on classes it considers similar. We never used the misclassified examples above, so this is a
fair test: for each test error, is the predicted class among the three most similar classes
of the true digit? By chance that would happen for 3 of the 9 wrong classes, a third of the time.
"""),
code(r"""
errors = list(zip(labels[~correct].tolist(), predicted[~correct].tolist()))
top3 = wrong.topk(3, dim=1).indices
share_in_top3 = sum(p in top3[t].tolist() for t, p in errors) / len(errors)
(true_d, predicted_d), count = Counter(errors).most_common(1)[0]
print(f"{len(errors)} teacher errors; {share_in_top3:.0%} land on one of the true digit's "
      "3 most similar classes (chance: 33%)")
print(f"most frequent error: {count} times a {true_d} predicted as {predicted_d}; "
      f"the most similar class of {true_d} is {most_similar[true_d].item()}")
assert share_in_top3 > 0.5 and most_similar[true_d] == predicted_d
"""),
md(r"""
The teacher's errors follow the similarity its soft targets show, far more often than chance.
This is the information a student receives from soft targets and never from one-hot labels.
"""),
md(r"""
## Entropy grows with temperature

The entropy of a soft target, in nats,

$$
H\big(q(T)\big) = -\sum_{i=1}^{C} q_i(T) \log q_i(T), \qquad 0 \le H \le \log C,
$$

is 0 for a one-hot distribution and $\log C = \log 10$ for the uniform one. It never decreases
with $T$: for every example, $\dfrac{dH}{dT} = \dfrac{\operatorname{Var}_{q(T)}(z)}{T^3} \ge 0$,
where the variance of the logits is taken under the soft target itself (exercise 2 derives it).
We compute it in float64 for every test example on a grid of temperatures from 0.1 to 1000.
"""),
code(r"""
entropy_grid = torch.logspace(-1, 3, 33, dtype=torch.float64)
logits64 = teacher_logits.double()
entropy = torch.stack([torch.special.entr(softmax_with_temperature(logits64, T)).sum(dim=-1)
                       for T in entropy_grid])  # [temperatures, examples], nats
mean_entropy = entropy.mean(dim=1)
for T, H in list(zip(entropy_grid.tolist(), mean_entropy.tolist()))[::4]:
    print(f"T = {T:8.2f}: mean entropy {H:.4f} nats")
"""),
code(r"""
fig, ax = plt.subplots(figsize=(6.4, 3.4))
ax.plot(entropy_grid, mean_entropy, marker=".", label="mean over test examples")
ax.fill_between(entropy_grid, entropy.quantile(0.1, dim=1), entropy.quantile(0.9, dim=1),
                alpha=0.3, label="10th to 90th percentile")
ax.axhline(math.log(10), color="k", ls="--", label="log 10 (uniform)")
ax.set(xscale="log", xlabel="temperature T", ylabel="entropy of the soft target (nats)",
       title="Soft targets get flatter as T grows")
ax.legend()
plt.show()
"""),
md(r"""
The curve rises from almost 0 (one-hot) at low temperature to $\log 10$ (uniform), and most of
the rise happens between $T = 1$ and a few tens, where $T$ is comparable to the spread of the
teacher's logits printed near the top. The next cell checks the claims: no example's entropy
decreases along the grid, and the two ends approach 0 and $\log 10$.
"""),
code(r"""
assert (entropy.diff(dim=0) >= 0).all(), "no example's entropy decreases as T grows"
print(f"mean entropy at T = 0.1: {mean_entropy[0]:.4f} nats; "
      f"at T = 1000: {mean_entropy[-1]:.6f} (log 10 = {math.log(10):.6f})")
assert mean_entropy[0] < 0.01 and math.log(10) - mean_entropy[-1] < 1e-3
"""),
md(r"""
## The two limits

### $T \to \infty$: uniform, plus a term linear in the logits

Expanding $\exp(z_i/T) = 1 + z_i/T + O(1/T^2)$ in numerator and denominator gives

$$
q_i(T) = \frac{1}{C} + \frac{z_i - \bar z}{C\,T} + O\!\left(\frac{1}{T^2}\right),
\qquad \bar z = \frac{1}{C}\sum_{j=1}^{C} z_j .
$$

At high temperature a soft target is the uniform distribution plus a correction proportional
to the *centred* logits. This is why distillation at high temperature turns into matching
logits (chapter 2). The uniform approximation alone is off by $O(1/T)$; with the linear term
the error should shrink like $1/T^2$, so doubling $T$ should divide it by about 4. We measure
the largest error over all test examples, in float64.
"""),
code(r"""
centred = logits64 - logits64.mean(dim=-1, keepdim=True)
limit_grid = [2.0**k for k in range(3, 13)]  # 8 ... 4096
uniform_error, linear_error = [], []
for T in limit_grid:
    q = softmax_with_temperature(logits64, T)
    uniform_error.append((q - 1 / 10).abs().max().item())
    linear_error.append((q - (1 / 10 + centred / (10 * T))).abs().max().item())
print("      T    error of 1/C    error of 1/C + (z - mean z)/(C T)    error x T^2")
for T, u, l in zip(limit_grid, uniform_error, linear_error):
    print(f"{T:7.0f}    {u:.2e}        {l:.2e}                           {l * T**2:8.1f}")
"""),
code(r"""
fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.loglog(limit_grid, uniform_error, marker="o", label="uniform 1/C")
ax.loglog(limit_grid, linear_error, marker="s", label="1/C + (z - mean z) / (C T)")
slope_2 = [linear_error[-1] * (limit_grid[-1] / T) ** 2 for T in limit_grid]
ax.loglog(limit_grid, slope_2, "k:", label="slope -2")
ax.set(xlabel="temperature T", ylabel="max |error| over test examples",
       title="High-temperature approximations of the soft target")
ax.legend()
plt.show()
"""),
md(r"""
For small $T$ neither approximation holds: the expansion needs $T$ large compared with the
differences between logits, which for this teacher reach a few tens. Beyond that, the uniform
approximation's error halves with each doubling of $T$ and the linear one's quarters, as the
plot's slopes show. The cell below asserts both rates on the last doublings of the grid.
"""),
code(r"""
def halving_ratios(errors):  # error(T) / error(2T) where T >= 256 (asymptotic)
    return [a / b for a, b in zip(errors[5:], errors[6:])]

print("uniform:", [round(r, 2) for r in halving_ratios(uniform_error)])
print("linear: ", [round(r, 2) for r in halving_ratios(linear_error)])
assert all(1.8 < r < 2.2 for r in halving_ratios(uniform_error))   # O(1/T)
assert all(3.6 < r < 4.4 for r in halving_ratios(linear_error))    # O(1/T^2)
"""),
md(r"""
### $T \to 0$: one-hot on the arg-max

As $T \to 0$ the largest logit wins everything: $q(T)$ tends to the one-hot vector of the
arg-max (when the largest logit is unique). How fast depends on the gap $\Delta$ between the
two largest logits: every wrong class has $q_i \le e^{-\Delta/T}\,q_{\text{top}}$, so

$$
1 - q_{\text{top}}(T) \;\le\; (C - 1)\, e^{-\Delta / T}.
$$

An example whose two best classes are nearly tied needs a very small $T$ to become one-hot.
The cell checks the bound for every test example and counts how many are one-hot to within
0.001.
"""),
code(r"""
top_two = logits64.topk(2, dim=-1).values
gap = top_two[:, 0] - top_two[:, 1]
print(f"gap between the two largest logits: median {gap.median():.2f}, min {gap.min():.4f}")
"""),
code(r"""
one_hot_share = []
for T in [1, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001]:
    top = softmax_with_temperature(logits64, T).max(dim=-1).values
    assert ((1 - top) <= 9 * torch.exp(-gap / T) + 1e-12).all()
    one_hot_share.append((top > 0.999).double().mean().item())
    print(f"T = {T:5}: {one_hot_share[-1]:6.1%} of examples have q_top > 0.999")
assert all(a <= b for a, b in zip(one_hot_share, one_hot_share[1:]))
assert one_hot_share[-1] >= 0.995
"""),
md(r"""
## Explore the temperature

In a running notebook (Colab or local), the slider below redraws the example's soft target for
each temperature; the black ticks mark the $T = 1$ distribution and the dotted line the uniform
one. On this web page there is no Python kernel behind the slider, so the player under it
shows the same figure, precomputed for the same temperatures: drag its slider or press play.
Both come from one drawing function.
"""),
code(r"""
SLIDER_TEMPERATURES = [0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 32]

def draw_soft_target(ax, temperature):
    soft = kd_lib.soften(z, temperature)
    ax.bar(range(10), soft, color=colors)
    ax.plot(range(10), kd_lib.soften(z, 1.0), "k_", markersize=16, label="T = 1")
    ax.axhline(0.1, color="gray", ls=":", label="uniform")
    entropy_nats = torch.special.entr(soft).sum().item()
    ax.set(ylim=(0, 1.02), xticks=range(10), xlabel="class (digit)", ylabel="probability")
    ax.set_title(f"Example {EXAMPLE} (a {true_digit}): T = {temperature:g}, "
                 f"entropy {entropy_nats:.2f} nats")
    ax.legend(loc="upper right")
"""),
code(r"""
# NBVAL_IGNORE_OUTPUT
from kd_lib.widgets import explore

explore(draw_soft_target, {"temperature": SLIDER_TEMPERATURES}, start={"temperature": 4})
"""),
code(r"""
from kd_lib.plots import scrubber

scrubber(draw_soft_target, SLIDER_TEMPERATURES, figsize=(6.4, 3.2))
"""),
md(r"""
## What we saw

- Real soft targets at $T = 1$ are far sharper than the syllabus's illustration: this teacher
  puts nearly all its probability on one class. A temperature inside the syllabus's typical
  range makes a typical soft target look like its example.
- The wrong-class probabilities are structured, not noise: each digit has a distinct most
  similar class, several pairs pick each other, and most of the teacher's own mistakes land on
  classes its soft targets rank as similar. This is what a student can learn from soft targets
  and cannot learn from labels.
- Temperature rescales, it never reorders: the predicted class is the same at every $T$, while
  the entropy rises monotonically from 0 towards $\log C$.
- At high $T$ a soft target is uniform plus a term linear in the centred logits, with an error
  that falls like $1/T^2$ once $T$ exceeds the logits' spread; at low $T$ it becomes one-hot, at
  a rate set by the gap between the two largest logits.

Chapter 2 puts soft targets into a loss, and shows why that loss carries a factor $T^2$.
"""),
md(r"""
## Exercises

1. **Temperature scaling for calibration.** Dividing logits by a temperature changes a model's
   confidence but not its predictions, which makes it a cheap way to calibrate a classifier
   {cite}`guo2017calibration`. The test set has too few teacher errors to measure calibration
   well, so generate fresh examples, `make_mnist1d(8000, seed=1, train_split=0.5)` (another
   seed gives new samples from the same distribution). Fit one temperature for the teacher by
   minimising the negative log-likelihood on one half, then compare the negative
   log-likelihood and the expected calibration error
   (`kd_lib.metrics.expected_calibration_error`) on the other half at $T = 1$ and at the fitted
   $T$. Is the teacher over- or under-confident?
"""),
solution(r"""
Minimise $\mathrm{NLL}(T) = \mathrm{CE}(z/T, y)$ over $T$ on one half (a grid search is enough
in one dimension) and evaluate on the other half, so that the fit is not judged on the data it
was fitted to. A fitted $T > 1$ means the teacher was (slightly) over-confident: softening its
probabilities lowers the held-out NLL and brings the confidence closer to the accuracy. The
hidden cell below does it; the printed numbers are the answer.
"""),
code(r"""
import torch.nn.functional as F
from kd_lib.metrics import expected_calibration_error

fresh = make_mnist1d(8000, seed=1, train_split=0.5)
fit_logits = predict_logits(teacher, fresh.x_train.to(device)).cpu()
held_logits = predict_logits(teacher, fresh.x_test.to(device)).cpu()

def held_out(T):  # (NLL, ECE) of the teacher at temperature T on the held-out half
    nll = F.cross_entropy(held_logits / T, fresh.y_test).item()
    return nll, expected_calibration_error(held_logits / T, fresh.y_test)

grid = torch.linspace(0.5, 3.0, 51)
fit_nll = torch.stack([F.cross_entropy(fit_logits / T, fresh.y_train) for T in grid])
fitted_T = grid[fit_nll.argmin()].item()
for T in [1.0, fitted_T]:
    print(f"T = {T:.2f}: held-out NLL {held_out(T)[0]:.4f}, ECE {held_out(T)[1]:.4f}")
(nll_1, ece_1), (nll_fitted, ece_fitted) = held_out(1.0), held_out(fitted_T)
assert fitted_T > 1 and nll_fitted < nll_1 and ece_fitted < ece_1
""", "hide-cell"),
md(r"""
2. **Entropy never decreases with $T$.** Show that
   $\dfrac{dH}{dT} = \dfrac{\operatorname{Var}_{q(T)}(z)}{T^3}$, where
   $\operatorname{Var}_{q}(z) = \sum_i q_i z_i^2 - \big(\sum_i q_i z_i\big)^2$. Check it by a
   finite difference for our example at $T = 4$.
"""),
solution(r"""
With $\beta = 1/T$ and $Z = \sum_j e^{\beta z_j}$, $\log q_i = \beta z_i - \log Z$, so
$H = \log Z - \beta\,\mathbb{E}_q[z]$. Since $\frac{d}{d\beta}\log Z = \mathbb{E}_q[z]$ and
$\frac{d}{d\beta}\mathbb{E}_q[z] = \operatorname{Var}_q(z)$, we get
$\frac{dH}{d\beta} = -\beta \operatorname{Var}_q(z)$. With $\frac{d\beta}{dT} = -1/T^2$,
$\frac{dH}{dT} = \operatorname{Var}_q(z) / T^3 \ge 0$, with equality only when all logits are
equal. The hidden cell compares it with a central finite difference.
"""),
code(r"""
def entropy_at(T):
    return torch.special.entr(softmax_with_temperature(z.double(), T)).sum().item()

T, h = 4.0, 1e-4
finite_difference = (entropy_at(T + h) - entropy_at(T - h)) / (2 * h)
q = softmax_with_temperature(z.double(), T)
formula = ((q * z.double() ** 2).sum() - (q * z.double()).sum() ** 2).item() / T**3
print(f"dH/dT at T = 4: finite difference {finite_difference:.6f}, "
      f"Var_q(z) / T^3 = {formula:.6f}")
assert abs(finite_difference - formula) < 1e-6
""", "hide-cell"),
md(r"""
3. **Only differences and ratios matter.** Show that
   $\operatorname{softmax}((z + c)/T) = \operatorname{softmax}(z/T)$ for any constant $c$, and
   that $\operatorname{softmax}(a z / T) = \operatorname{softmax}\big(z / (T/a)\big)$ for $a > 0$.
   What does the second identity say about using "the same" temperature for two teachers whose
   logits have different spreads?
"""),
solution(r"""
Adding $c$ multiplies numerator and denominator by $e^{c/T}$. Scaling the logits by $a$ is the
same as dividing the temperature by $a$. So a temperature only means something relative to the
scale of the logits: a teacher whose logits are twice as spread out needs twice the temperature
for equally soft targets. A "typical" $T$ copied from a paper is a starting point, not a
constant; look at the entropy or the top-class probability of your teacher's soft targets
instead (as in the table above).
"""),
code(r"""
at_3 = kd_lib.soften(teacher_logits, 3.0)
assert torch.allclose(kd_lib.soften(teacher_logits + 7.5, 3.0), at_3, atol=1e-6)
assert torch.allclose(kd_lib.soften(2 * teacher_logits, 6.0), at_3, atol=1e-6)
print("shift invariance and the scale/temperature trade-off hold on every test example")
""", "hide-cell"),
md(r"""
4. **Reverse-engineer the syllabus's example.** Which logits give the soft target
   `[0.05, 0.85, 0.08, 0.02]` at $T = 1$? What would this four-class "teacher" show at $T = 4$?
"""),
solution(r"""
Any $z = \log p + c$: a softmax inverts a log up to a constant. At temperature $T$ the soft
target is then $p_i^{1/T} / \sum_j p_j^{1/T}$: at $T = 4$ the fourth root flattens it a lot.
"""),
code(r"""
syllabus = torch.tensor([0.05, 0.85, 0.08, 0.02])
logits_from_syllabus = syllabus.log()
assert torch.allclose(kd_lib.soften(logits_from_syllabus, 1.0), syllabus)
at_4 = kd_lib.soften(logits_from_syllabus, 4.0)
assert torch.allclose(at_4, syllabus**0.25 / (syllabus**0.25).sum())
print("logits (up to a constant):", [round(x, 2) for x in logits_from_syllabus.tolist()])
print("soft target at T = 4:     ", [round(x, 3) for x in at_4.tolist()])
""", "hide-cell"),
]


# ================================================================================ chapter 02
CHAPTER_02 = [
md(r"""
# 2. The distillation loss

Chapter 1 looked at soft targets. Here we put them into the loss a student is trained with,
derive its gradient, and measure the details that the syllabus's one-line formula leaves out:
the factor $T^2$, the direction of the KL divergence, the reduction over a batch and over
tokens, and the pitfalls of PyTorch's `F.kl_div`. Every formula is checked against
`kd_lib`'s implementation, and every pitfall is run.

**In this chapter you will**

- write the combined loss with every symbol defined, and check an inline version against
  `kd_lib.distillation_loss`;
- derive the student's gradient $T(q_i - p_i)/N$, and check it against autograd;
- measure why the soft term is multiplied by $T^2$, and watch distillation turn into logit
  matching at high temperature;
- compare forward and reverse KL, and soft cross-entropy with KL;
- run six ways `F.kl_div` silently gives a wrong loss, and correct the syllabus's formula;
- see what $\alpha$ does to the gradient, with a slider.

The chapter trains one small student for a few seconds and runs in well under a minute on one
CPU thread.
"""),
code(setup_cell()),
md(r"""
## A teacher and a student

We use the shipped MNIST-1D teacher of chapter 1 {cite}`greydanus2020mnist1d` and a student
that has barely started learning: a two-layer MLP trained on the hard labels for a few epochs
with `kd_lib.train`. A partly trained student makes the losses and gradients below look like
those early in a real distillation run. We treat the 1,000 test examples as one batch.
"""),
code(r"""
import math
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from kd_lib.data import make_mnist1d
from kd_lib.metrics import accuracy, predict_logits
from kd_lib.models import MLP, MLPConfig
from kd_lib.pretrained import load_pretrained
"""),
code(r"""
data = make_mnist1d(5000, seed=42).to(device)
teacher = load_pretrained("mnist1d_cnn", device=device)
student = MLP(MLPConfig(hidden=(256, 256))).to(device)
config = kd_lib.TrainConfig(num_epochs=10, progress=False)
kd_lib.train(student, (data.x_train, data.y_train), config=config)  # hard labels only
teacher_logits = predict_logits(teacher, data.x_test).cpu()
student_logits = predict_logits(student, data.x_test).cpu()
labels = data.y_test.cpu()
print(f"batch: {tuple(student_logits.shape)} logits; test accuracy: "
      f"teacher {accuracy(teacher_logits, labels):.1%}, "
      f"student {accuracy(student_logits, labels):.1%}")
"""),
md(r"""
## The combined loss

The student is trained on a weighted sum of two losses: cross-entropy with the true labels
(the *hard* loss) and a KL divergence from the teacher's soft targets (the *soft* loss):

$$
\mathcal{L}(z) = \alpha\,\mathcal{L}_{\text{hard}}(z) + (1-\alpha)\,\mathcal{L}_{\text{soft}}(z),
$$

$$
\mathcal{L}_{\text{hard}} = \frac{1}{N}\sum_{n=1}^{N} -\log \operatorname{softmax}(z_n)_{y_n},
$$

$$
\mathcal{L}_{\text{soft}} = \frac{T^2}{N}\sum_{n=1}^{N} \mathrm{KL}\big(p_T(v_n)\,\big\|\,q_T(z_n)\big),
$$

$$
\mathrm{KL}(p\,\|\,q) = \sum_{c=1}^{C} p_c \log\frac{p_c}{q_c},
$$

where

- $N$ is the number of positions averaged over: rows of a batch here, tokens for a language
  model (chapter 7);
- $C$ is the number of classes (10 here; the vocabulary size for a language model);
- $z_n \in \mathbb{R}^C$ are the student's logits for position $n$ and $v_n$ the teacher's,
  which are constants: no gradient flows into the teacher;
- $y_n$ is the true label;
- $T > 0$ is the temperature, $p_T(v) = \operatorname{softmax}(v/T)$ the teacher's soft
  target and $q_T(z) = \operatorname{softmax}(z/T)$ the student's softened prediction; the
  hard loss uses $T = 1$;
- $\alpha \in [0, 1]$ weights the **hard** loss, as in the syllabus and in
  `kd_lib.distillation_loss`.

Conventions differ: Hinton, Vinyals and Dean {cite}`hinton2015distilling` describe a weighted
average of the two objectives and found the best results with a considerably lower weight on
the hard one, and many libraries and tutorials call the weight of the *soft* term $\alpha$. An
$\alpha$ of 0.9 in one code base can mean 0.1 in another: check before copying a
hyperparameter.

An inline version, checked against `kd_lib.distillation_loss` at a few settings:
"""),
code(r"""
def distillation_loss_inline(student_logits, teacher_logits, labels, temperature, alpha):
    hard = F.cross_entropy(student_logits, labels)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    soft = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()  # KL(p || q), mean over rows
    return alpha * hard + (1 - alpha) * temperature**2 * soft
"""),
code(r"""
for T, alpha in [(1, 0.5), (4, 0.1), (4, 0.9), (10, 0.0), (2, 1.0)]:
    inline = distillation_loss_inline(student_logits, teacher_logits, labels, T, alpha)
    library = kd_lib.distillation_loss(student_logits, teacher_logits, labels,
                                       temperature=T, alpha=alpha)
    print(f"T = {T:2}, alpha = {alpha}: inline {inline:.4f}, kd_lib {library:.4f}")
    assert torch.allclose(inline, library, rtol=1e-5)
"""),
md(r"""
## The gradient the student receives

Write $q = q_T(z_n)$, $p = p_T(v_n)$ for one position. Since
$\log q_c = z_c/T - \log\sum_j e^{z_j/T}$, we have
$\partial \log q_c / \partial z_i = (\delta_{ci} - q_i)/T$. The teacher's part of the KL,
$\sum_c p_c \log p_c$, does not depend on $z$, so, using $\sum_c p_c = 1$,

$$
\frac{\partial}{\partial z_{n,i}}\; \frac{T^2}{N}\sum_{m=1}^{N} \mathrm{KL}(p_m \,\|\, q_m)
= -\frac{T^2}{N}\sum_{c} p_c\,\frac{\delta_{ci} - q_i}{T}
= \frac{T}{N}\,\big(q_i - p_i\big).
$$

The same steps with $T = 1$ and a one-hot $p$ give the hard loss's gradient,
$\big(\operatorname{softmax}(z_n)_i - [i = y_n]\big)/N$. The student is pulled towards the
teacher's soft target in proportion to how far its own softened prediction is from it.
Autograd agrees:
"""),
code(r"""
T = 4.0
N = len(student_logits)
z = student_logits.clone().requires_grad_(True)
kd_lib.kd_loss(z, teacher_logits, T).backward()
by_hand = T * (kd_lib.soften(student_logits, T) - kd_lib.soften(teacher_logits, T)) / N
print("autograd, row 0 (x N):", [round(g, 4) for g in (N * z.grad[0]).tolist()])
print("T(q - p), row 0:      ", [round(g, 4) for g in (N * by_hand[0]).tolist()])
assert torch.allclose(z.grad, by_hand, atol=1e-8)
"""),
code(r"""
z = student_logits.clone().requires_grad_(True)
F.cross_entropy(z, labels).backward()
hard_by_hand = (torch.softmax(student_logits, dim=-1) - F.one_hot(labels, 10)) / N
assert torch.allclose(z.grad, hard_by_hand, atol=1e-8)
print("hard loss: autograd == (softmax(z) - onehot(y)) / N")
"""),
md(r"""
## Why $T^2$

The soft gradient is $T(q - p)/N$. Without the factor $T^2$ in front of the KL it would be
$(q - p)/(T N)$, and $q - p$ itself shrinks like $1/T$ at high temperature (chapter 1: both
distributions approach uniform), so the gradient would fall like $1/T^2$. Multiplying by $T^2$
cancels this, so that the soft term keeps roughly the same weight relative to the hard term
whatever temperature is chosen {cite}`hinton2015distilling`. We measure the norm of the soft
term's gradient with respect to the student's logits, with and without $T^2$, on real teacher
and student logits.
"""),
code(r"""
def soft_gradient_norm(temperature, scale_by_t2=True):
    z = student_logits.clone().requires_grad_(True)
    loss = kd_lib.kd_loss(z, teacher_logits, temperature)  # includes T^2
    if not scale_by_t2:
        loss = loss / temperature**2  # the KL alone, as the syllabus writes it
    loss.backward()
    return z.grad.norm().item()

GRID = [1, 2, 4, 8, 16, 32, 64]
scaled = [soft_gradient_norm(T) for T in GRID]
unscaled = [soft_gradient_norm(T, scale_by_t2=False) for T in GRID]
"""),
md(r"""
In the high-temperature limit the scaled gradient tends to a constant,
$(z_i - \bar z) - (v_i - \bar v)$ divided by $C N$ (the expansion of chapter 1 applied to
$T(q - p)/N$). We draw that limit too.
"""),
code(r"""
def centre(logits):
    return logits - logits.mean(dim=-1, keepdim=True)

limit = (centre(student_logits) - centre(teacher_logits)).norm().item() / (10 * N)
print("  T   with T^2   without T^2")
for T, s, u in zip(GRID, scaled, unscaled):
    print(f"{T:3}   {s:.5f}    {u:.2e}")
print(f"high-T limit of the scaled gradient: {limit:.5f}")
"""),
code(r"""
fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.loglog(GRID, scaled, marker="o", label="with T² (kd_lib.kd_loss)")
ax.loglog(GRID, unscaled, marker="s", label="without T²")
ax.loglog(GRID, [unscaled[-1] * (GRID[-1] / T) ** 2 for T in GRID], "k:", label="slope -2")
ax.axhline(limit, color="C0", ls="--", lw=1, label="high-T limit")
ax.set(xlabel="temperature T", ylabel="‖∂ soft loss / ∂ student logits‖",
       title="Gradient of the soft term on real logits")
ax.legend(fontsize=8)
plt.show()
"""),
md(r"""
Without $T^2$ the gradient falls by orders of magnitude across this range, on the $1/T^2$
slope from moderate temperatures on. With $T^2$ it stays within a small factor and settles on
its high-temperature limit. (At $T = 1$ it is smaller: this teacher's logits are far apart, so
$p$ and $q$ saturate and $q - p$ cannot grow further.) The asserts:
"""),
code(r"""
def spread(values):
    return max(values) / min(values)

slope = math.log(unscaled[-1] / unscaled[-3]) / math.log(GRID[-1] / GRID[-3])  # T = 16 .. 64
print(f"without T^2: spread {spread(unscaled):.0f}x, log-log slope for T >= 16: {slope:.2f}")
print(f"with T^2: spread {spread(scaled):.1f}x for T >= 1, {spread(scaled[1:]):.1f}x for T >= 2")
assert -2.3 < slope < -1.7 and spread(unscaled) > 500
assert spread(scaled[1:]) < 3 and spread(scaled) < 6 and abs(scaled[-1] / limit - 1) < 0.1
"""),
md(r"""
## High temperature: distillation becomes logit matching

Chapter 1 showed that at high $T$ a soft target is $1/C + (z - \bar z)/(CT)$. Put that into the
KL, expanded to second order around $p$, $\mathrm{KL}(p\,\|\,q) \approx \tfrac12 \sum_c (p_c - q_c)^2/p_c$
with $p_c \approx 1/C$, and the soft loss becomes

$$
T^2\,\mathrm{KL}\big(p_T(v)\,\big\|\,q_T(z)\big) \;\xrightarrow[T\to\infty]{}\;
\frac{1}{2C}\sum_{c=1}^{C} \big((z_c - \bar z) - (v_c - \bar v)\big)^2 ,
$$

half the mean squared difference of the centred logits: at high temperature, distillation is
regression on the logits. Hinton et al. show the same for the gradient in their section 2.1,
with logits that have zero mean {cite}`hinton2015distilling` (their $N$ is the number of
classes, our $C$). Centring matters: a softmax ignores a constant added to all of a row's
logits, so the student cannot be asked to match that constant.
"""),
code(r"""
half_mse_centred = 0.5 * (centre(student_logits) - centre(teacher_logits)).pow(2).mean().item()
half_mse_raw = 0.5 * (student_logits - teacher_logits).pow(2).mean().item()
print(f"half MSE of the logits: centred {half_mse_centred:.3f} (the limit), raw {half_mse_raw:.3f}")
relative_error = []
for T in [1, 4, 16, 64, 256, 1024]:
    soft = kd_lib.kd_loss(student_logits, teacher_logits, T).item()
    relative_error.append(abs(soft / half_mse_centred - 1))
    print(f"T = {T:4}: T^2 KL = {soft:8.3f}, relative distance to the limit {relative_error[-1]:.4f}")
"""),
code(r"""
shrinking = all(a > b for a, b in zip(relative_error[2:], relative_error[3:]))  # from T = 16 on
assert shrinking and relative_error[-1] < 0.01
assert abs(half_mse_raw / half_mse_centred - 1) > 0.05  # raw logits are not the limit
"""),
md(r"""
## Forward or reverse KL?

$\mathrm{KL}(p\,\|\,q)$ is not symmetric. The *forward* KL above, teacher first, averages
$\log(p/q)$ under the teacher's distribution; the *reverse* KL, $\mathrm{KL}(q\,\|\,p)$,
averages $\log(q/p)$ under the student's. `kd_lib.kd_loss` is the forward one and
`kd_lib.reverse_kl` the reverse one (both with $T^2$). On the same logits they give different
numbers:
"""),
code(r"""
for T in [1, 4]:
    forward = kd_lib.kd_loss(student_logits, teacher_logits, T)
    reverse = kd_lib.reverse_kl(student_logits, teacher_logits, T)
    print(f"T = {T}: forward T^2 KL(p||q) = {forward:.4f}, reverse T^2 KL(q||p) = {reverse:.4f}")
    assert abs(forward / reverse - 1) > 0.1
    # the reverse KL's value is the forward KL's with the two roles swapped
    assert torch.allclose(reverse, kd_lib.kd_loss(teacher_logits, student_logits, T))
"""),
md(r"""
Forward KL is *mode covering*: it punishes the student wherever the teacher has probability the
student lacks. Reverse KL is *mode seeking*: it punishes the student for putting probability
where the teacher has little, and tolerates missing some of the teacher's modes. The difference
matters most for language models, where MiniLLM uses the reverse direction
{cite}`gu2023minillm`; chapter 7 shows it at length.

## Soft cross-entropy or KL?

Many implementations use the soft cross-entropy $H(p, q) = -\sum_c p_c \log q_c$ instead of
the KL. The two differ by the teacher's entropy,
$H(p, q) = H(p) + \mathrm{KL}(p\,\|\,q)$, which does not depend on the student. So they have
the same gradient, but only the KL is 0 when the student matches the teacher; the soft
cross-entropy's value has a floor that changes with $T$ and with the teacher, which makes its
value misleading to compare across runs.
"""),
code(r"""
T = 4.0
z_kl = student_logits.clone().requires_grad_(True)
z_ce = student_logits.clone().requires_grad_(True)
kl = kd_lib.kd_loss(z_kl, teacher_logits, T)
cross_entropy = kd_lib.soft_cross_entropy(z_ce, teacher_logits, T)
kl.backward(); cross_entropy.backward()
teacher_entropy = torch.special.entr(kd_lib.soften(teacher_logits, T)).sum(dim=-1).mean()
print(f"T^2 H(p,q) = {cross_entropy:.4f}, T^2 KL = {kl:.4f}: difference {cross_entropy - kl:.4f}")
print(f"T^2 H(p) = {T**2 * teacher_entropy:.4f}")
assert torch.allclose(cross_entropy - kl, T**2 * teacher_entropy, rtol=1e-4)
assert torch.allclose(z_kl.grad, z_ce.grad, atol=1e-8)
print("gradients identical")
"""),
md(r"""
## Six ways `F.kl_div` gives the wrong loss

PyTorch's `F.kl_div(input, target)` computes $\sum \text{target}\,(\log \text{target} - \text{input})$:
that is $\mathrm{KL}(\text{target}\,\|\,\exp(\text{input}))$ **when `input` holds
log-probabilities**. So the soft loss is
`F.kl_div(log_softmax(z/T), softmax(v/T), reduction="batchmean") * T**2`: student first, as
log-probabilities; teacher second, as probabilities. This is what the syllabus's code does, and
it equals `kd_lib.kd_loss` for `[B, C]` logits:
"""),
code(r"""
T = 4.0
log_q = F.log_softmax(student_logits / T, dim=-1)  # student: LOG-probabilities
p = F.softmax(teacher_logits / T, dim=-1)           # teacher: probabilities
reference = kd_lib.kd_loss(student_logits, teacher_logits, T)
correct = F.kl_div(log_q, p, reduction="batchmean") * T**2
print(f"kd_lib.kd_loss = {reference:.4f}; F.kl_div(..., 'batchmean') * T^2 = {correct:.4f}")
assert torch.allclose(correct, reference, rtol=1e-5)
"""),
md(r"""
Each pitfall below is one small change to that call, compared with the reference.

**(a) `reduction="mean"` divides by every element**, $B \cdot C$, not by the batch size $B$:
the loss comes out $C$ times too small: 10 times here, and as many times as there are tokens
in the vocabulary for a language model. PyTorch warns about it, but the warning is easy to miss.
"""),
code(r"""
import warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    mean_reduced = F.kl_div(log_q, p, reduction="mean") * T**2
print(f"'mean': {mean_reduced:.4f} = reference / {reference / mean_reduced:.1f}")
for warning in caught:
    print("PyTorch warns:", str(warning.message)[:90], "...")
assert torch.allclose(mean_reduced * p.shape[-1], reference, rtol=1e-5)
"""),
md(r"""
**(b) Probabilities instead of log-probabilities as `input`.** `F.kl_div` does not check: it
then computes $\sum_c p_c(\log p_c - q_c) = -H(p) - \sum_c p_c q_c$, which is always negative,
a "divergence" below zero.
"""),
code(r"""
q = F.softmax(student_logits / T, dim=-1)
probabilities_as_input = F.kl_div(q, p, reduction="batchmean") * T**2
print(f"input = probabilities: {probabilities_as_input:.4f} (reference: {reference:.4f})")
assert probabilities_as_input < 0 < reference
"""),
md(r"""
**(c) Argument order.** In mathematics the first argument of $\mathrm{KL}(\cdot\,\|\,\cdot)$ is
the distribution the average is taken under; in `F.kl_div` it is the *second* argument. So
`F.kl_div(input=log q_student, target=p_teacher)` is the forward $\mathrm{KL}(p\,\|\,q)$, and
swapping the roles gives the reverse KL, a different loss.
"""),
code(r"""
log_p = F.log_softmax(teacher_logits / T, dim=-1)
swapped = F.kl_div(log_p, q, reduction="batchmean") * T**2
print(f"F.kl_div(log q, p) = {correct:.4f} = forward KL(p||q); "
      f"F.kl_div(log p, q) = {swapped:.4f} = reverse KL(q||p)")
reverse = kd_lib.reverse_kl(student_logits, teacher_logits, T)
assert torch.allclose(swapped, reverse, rtol=1e-5)
assert abs(swapped / correct - 1) > 0.1
"""),
md(r"""
**(d) A detached student.** If the student's logits reach the soft loss through `.detach()` or
from a forward pass under `torch.no_grad()` (easy to do when the teacher's and the student's
forward passes sit in the same block), no gradient reaches the student from the soft term. With
the soft term alone, `backward()` fails and an optimizer step changes nothing:
"""),
code(r"""
import copy

probe = copy.deepcopy(student).cpu()  # a copy of the student, for this demonstration
probe.zero_grad(set_to_none=True)
x_batch, y_batch = data.x_train[:256].cpu(), data.y_train[:256].cpu()
teacher_batch = predict_logits(teacher, x_batch).cpu()
optimizer = torch.optim.SGD(probe.parameters(), lr=0.1)
before = [w.detach().clone() for w in probe.parameters()]
"""),
code(r"""
# BUG: .detach() cuts the graph between the loss and the student
loss = kd_lib.kd_loss(probe(x_batch).detach(), teacher_batch, T)
try:
    loss.backward()
except RuntimeError as error:
    print("loss.backward():", str(error).splitlines()[0])
optimizer.step()
unchanged = all(torch.equal(a, b) for a, b in zip(before, probe.parameters()))
print("parameters unchanged after the optimizer step:", unchanged)
assert unchanged and all(w.grad is None for w in probe.parameters())
"""),
md(r"""
Combined with the hard loss the bug is silent: the loss has a gradient, training runs, and the
student is trained on $\alpha$ times the labels alone. The gradient of the buggy loss equals the
gradient of the hard term alone, not the gradient of the real distillation loss:
"""),
code(r"""
def parameter_gradient(loss):
    probe.zero_grad()
    loss.backward()
    return torch.cat([w.grad.flatten() for w in probe.parameters()])

alpha = 0.5
with torch.no_grad():
    detached_logits = probe(x_batch)  # BUG: this forward pass of the student ran under no_grad
soft = kd_lib.kd_loss(detached_logits, teacher_batch, T)
g_buggy = parameter_gradient(alpha * F.cross_entropy(probe(x_batch), y_batch) + (1 - alpha) * soft)
g_hard = parameter_gradient(alpha * F.cross_entropy(probe(x_batch), y_batch))
g_right = parameter_gradient(kd_lib.distillation_loss(probe(x_batch), teacher_batch, y_batch,
                                                      temperature=T, alpha=alpha))
print(f"|g_buggy - g_hard| = {(g_buggy - g_hard).norm():.1e}; "
      f"|g_buggy - g_right| = {(g_buggy - g_right).norm():.3f}")
assert torch.allclose(g_buggy, g_hard) and not torch.allclose(g_buggy, g_right)
"""),
md(r"""
**(e) Token logits `[B, L, V]` with padding.** For a language model the loss should be averaged
per token, over real tokens only. `reduction="batchmean"` divides the sum over *all* positions
(padding included) by the first dimension $B$ only. We build a small batch of 4 "sequences" of
length 6 from our logits (10 classes stand in for a vocabulary), with 6, 4, 3 and 2 real tokens;
the logits at padding positions are whatever the model emitted there, as in practice.
"""),
code(r"""
B, L = 4, 6
token_student = student_logits[: B * L].reshape(B, L, 10)
token_teacher = teacher_logits[: B * L].reshape(B, L, 10)
lengths = torch.tensor([6, 4, 3, 2])
mask = torch.arange(L) < lengths[:, None]  # [B, L], True for real tokens
token_labels = labels[: B * L].reshape(B, L).masked_fill(~mask, -100)  # -100 marks padding
print(mask.int())
"""),
code(r"""
token_log_q = F.log_softmax(token_student / T, dim=-1)
token_p = F.softmax(token_teacher / T, dim=-1)
per_position = F.kl_div(token_log_q, token_p, reduction="none").sum(dim=-1) * T**2  # [B, L]
batchmean = F.kl_div(token_log_q, token_p, reduction="batchmean") * T**2
per_token = kd_lib.kd_loss(token_student, token_teacher, T, mask=mask)
print(f"'batchmean': {batchmean:.3f} (sum over all {B * L} positions / B = {B})\n"
      f"kd_lib.kd_loss(mask=...): {per_token:.3f} (sum over {mask.sum()} real tokens / {mask.sum()})")
assert torch.allclose(batchmean, per_position.sum() / B, rtol=1e-5)
assert torch.allclose(per_token, per_position[mask].sum() / mask.sum(), rtol=1e-5)
"""),
md(r"""
`batchmean` is wrong twice here: it counts the padding positions, and its scale grows with the
sequence length, so the balance between the soft and the hard term (which `F.cross_entropy`
averages per token) changes with $L$.

**(f) Forgetting $T^2$.** Measured above: without it the soft term's gradient falls like
$1/T^2$. At a fixed $\alpha$ the hard term then takes over as $T$ grows, and a student
"distilled" at a high temperature is in fact trained on the labels. The ratio of the two terms'
gradient norms at $\alpha = 0.5$:
"""),
code(r"""
z = student_logits.clone().requires_grad_(True)
F.cross_entropy(z, labels).backward()
hard_norm = z.grad.norm().item()
print("  T   soft/hard with T^2   soft/hard without T^2")
for T, s, u in zip(GRID[:5], scaled, unscaled):
    print(f"{T:3}   {s / hard_norm:18.2f}   {u / hard_norm:21.3f}")
assert all(s / hard_norm > 1 for s in scaled[1:5]) and unscaled[3] / hard_norm < 0.1
"""),
md(r"""
With $T^2$, the soft term dominates at every temperature from 2 on (with this weak student, its
gradient is larger than the hard term's). Without it, at $T = 8$ the soft term is a few percent
of the hard one: distillation has quietly switched itself off.

## The syllabus's formula, corrected

The syllabus writes

```text
Loss = α * CrossEntropy(student_predictions, true_labels) +
       (1-α) * KL_Divergence(student_predictions/T, teacher_predictions/T)
```

Compared with the loss at the top of this chapter, it leaves out:

1. **the factor $T^2$** on the soft term, without which the soft gradient shrinks like $1/T^2$
   and the meaning of $\alpha$ changes with $T$ (pitfall f);
2. **the direction of the KL**: read as mathematics, $\mathrm{KL}(\text{student}\,\|\,\text{teacher})$
   is the *reverse* KL, while the standard distillation loss is the forward
   $\mathrm{KL}(\text{teacher}\,\|\,\text{student})$ {cite}`hinton2015distilling`; and
   `F.kl_div` takes its arguments in the opposite order to the mathematical notation
   (pitfall c);
3. **where "/T" goes**: it divides the *logits*, before the (log-)softmax; dividing
   predictions that are already probabilities by $T$ does not even give a distribution (below);
4. **the reduction**: a mean over batch rows (`'batchmean'` for `[B, C]`), not over every
   element (pitfall a), and a per-token mean for sequences (pitfall e);
5. **a padding mask** for sequences (pitfall e);
6. **the teacher in eval mode, under `torch.no_grad()`**: dropout off, batch-norm statistics
   frozen, no gradient or activation memory for the teacher (`kd_lib.train` does this, and can
   cache the teacher's logits once);
7. **float32**: compute the softmaxes and the KL in float32 even when the model runs in
   bfloat16, which keeps only 8 significant bits (below); `kd_lib`'s losses cast their inputs;
8. **which term $\alpha$ weights**, which differs between sources (see above).
"""),
code(r"""
probabilities = torch.softmax(student_logits, dim=-1)
print(f"softmax(z) / T at T = 4 sums to {(probabilities / 4).sum(dim=-1)[0]:.2f}, not 1")
print(f"a logit of 100.3 in bfloat16 becomes {torch.tensor(100.3).bfloat16().item()}")
assert torch.allclose((probabilities / 4).sum(dim=-1), torch.tensor(0.25))
assert torch.tensor(100.3).bfloat16().item() == 100.5
"""),
md(r"""
The syllabus's *code* is better than its formula: it applies $T$ to the logits, uses
`F.kl_div` with the student's log-probabilities first, `'batchmean'` and $T^2$. Here it is
verbatim (only the function's name changed), compared with `kd_lib.distillation_loss`:
"""),
code(r"""
# The syllabus's code, verbatim except for the name of the second function.
def soften_predictions(logits, temperature):
    return F.softmax(logits / temperature, dim=-1)

def seed_distillation_loss(student_logits, teacher_logits, true_labels, alpha, temperature):
    soft_loss = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        soften_predictions(teacher_logits, temperature),
        reduction='batchmean'
    ) * temperature ** 2

    hard_loss = F.cross_entropy(student_logits, true_labels)

    return alpha * hard_loss + (1 - alpha) * soft_loss
"""),
code(r"""
T, alpha = 4.0, 0.5
seed = seed_distillation_loss(student_logits, teacher_logits, labels, alpha, T)
library = kd_lib.distillation_loss(student_logits, teacher_logits, labels,
                                   temperature=T, alpha=alpha)
print(f"[B, C]: syllabus {seed:.4f}, kd_lib {library:.4f}")
assert torch.allclose(seed, library, rtol=1e-5)
"""),
md(r"""
On `[B, C]` logits they agree. On token logits `[B, L, V]` with padding they do not: called as
is, `F.cross_entropy` reads dimension 1 as the classes and fails; flattened to `[B·L, V]`, the
hard term skips the padding (label $-100$), but the soft term still averages over the padding
positions. Dropping the padding positions before the call removes the difference.
"""),
code(r"""
try:
    seed_distillation_loss(token_student, token_teacher, token_labels, alpha, T)
except RuntimeError as error:
    print("[B, L, V] as is:", type(error).__name__, "-", str(error).splitlines()[0])
"""),
code(r"""
flat_student, flat_teacher = token_student.reshape(-1, 10), token_teacher.reshape(-1, 10)
flat = seed_distillation_loss(flat_student, flat_teacher, token_labels.reshape(-1), alpha, T)
real = seed_distillation_loss(token_student[mask], token_teacher[mask], token_labels[mask], alpha, T)
masked = kd_lib.distillation_loss(token_student, token_teacher, token_labels,
                                  temperature=T, alpha=alpha)
print(f"syllabus, flattened: {flat:.4f}; padding dropped first: {real:.4f}; kd_lib: {masked:.4f}")
assert not torch.allclose(flat, masked, rtol=1e-3) and torch.allclose(real, masked, rtol=1e-5)
"""),
md(r"""
## What $\alpha$ does

For one example ($N = 1$) the gradient of the combined loss is a straight line in $\alpha$
between the two terms' gradients:

$$
\frac{\partial \mathcal{L}}{\partial z_i}
= \alpha\,\big(\operatorname{softmax}(z)_i - [i = y]\big) + (1 - \alpha)\, T\,\big(q_{T,i} - p_{T,i}\big).
$$

The hard part has a positive gradient on every wrong class (gradient descent pushes every wrong
logit down) and a negative one on the true class. The soft part can have a negative gradient
on a wrong class: wherever the student gives that class less probability than the teacher
does, gradient descent pushes its logit *up*. The figures show the negative gradient,
$-\partial\mathcal{L}/\partial z_i$, the direction a gradient step moves each logit, for the
example of chapter 1.
"""),
code(r"""
EXAMPLE = 0
true_digit = labels[EXAMPLE].item()

ONE = slice(EXAMPLE, EXAMPLE + 1)  # a batch of one: N = 1

def combined_gradient(temperature, alpha):
    z = student_logits[ONE].clone().requires_grad_(True)
    loss = kd_lib.distillation_loss(z, teacher_logits[ONE], labels[ONE],
                                    temperature=temperature, alpha=alpha)
    loss.backward()
    return loss.item(), z.grad[0]
"""),
code(r"""
ALPHAS = [round(0.1 * k, 1) for k in range(11)]
T = 4.0
_, hard_gradient = combined_gradient(T, 1.0)
_, soft_gradient = combined_gradient(T, 0.0)
for alpha in ALPHAS:
    mixed = alpha * hard_gradient + (1 - alpha) * soft_gradient
    assert torch.allclose(combined_gradient(T, alpha)[1], mixed, atol=1e-6)
wrong_classes = [c for c in range(10) if c != true_digit]
pushed_up = [c for c in wrong_classes if soft_gradient[c] < 0]
print(f"example {EXAMPLE} (a {true_digit}): wrong classes pushed up by the soft term: {pushed_up}, "
      "by the hard term: none")
assert (hard_gradient[wrong_classes] > 0).all() and len(pushed_up) >= 1
"""),
md(r"""
The scrubber below moves $\alpha$ from 0 (soft loss only) to 1 (hard loss only) at $T = 4$. The
wrong classes the teacher finds plausible get pulled up only while the soft term has enough
weight; the hard term alone pushes every wrong class down.
"""),
code(r"""
def draw_alpha(ax, alpha, temperature=4.0):
    loss, gradient = combined_gradient(temperature, alpha)
    ends = [combined_gradient(temperature, end)[1] for end in (0.0, 1.0)]  # the extremes
    top = 1.05 * torch.cat(ends).abs().max().item()
    ax.bar(range(10), -gradient, color=["C3" if c == true_digit else "C0" for c in range(10)])
    ax.axhline(0, color="k", lw=0.8)
    ax.set(ylim=(-top, top), xticks=range(10), xlabel="class (digit; red: true class)",
           ylabel="−∂L/∂z (update direction)")
    ax.set_title(f"α = {alpha:g}, T = {temperature:g}: loss {loss:.3f}")
"""),
code(r"""
from kd_lib.plots import scrubber

scrubber(draw_alpha, ALPHAS, figsize=(6.4, 3.2))
"""),
md(r"""
In a running notebook, two sliders move $T$ and $\alpha$ together (on this web page the sliders
have no kernel to redraw with; use the player above).
"""),
code(r"""
# NBVAL_IGNORE_OUTPUT
from kd_lib.widgets import explore

explore(draw_alpha, {"alpha": ALPHAS, "temperature": [1.0, 2.0, 4.0, 8.0, 16.0]},
        start={"alpha": 0.5, "temperature": 4.0})
"""),
md(r"""
## What we saw

- The distillation loss is $\alpha\,\mathrm{CE} + (1-\alpha)\,T^2\,\mathrm{KL}(p_T\,\|\,q_T)$,
  with $\alpha$ on the hard term in this book; an inline version equals
  `kd_lib.distillation_loss`.
- The soft term's gradient is $T(q - p)/N$. With $T^2$ it stays within a small factor across
  temperatures and tends to a constant; without $T^2$ it falls like $1/T^2$, and at a high
  temperature the student is trained on labels alone.
- At high temperature the soft loss becomes half the mean squared difference of the centred
  logits: distillation becomes logit matching.
- Forward and reverse KL are different losses; soft cross-entropy and KL have the same
  gradient and values that differ by the teacher's entropy.
- `F.kl_div` is correct only with the student's log-probabilities first, `'batchmean'`, $T^2$,
  a student that is not detached, and, for tokens, a per-token mean over real tokens, which
  `'batchmean'` cannot give. The syllabus's code gets the classification case right; its formula
  leaves out most of what matters.
"""),
md(r"""
## Exercises

1. **Weights without $T^2$.** Suppose a code base uses $\alpha'\,\mathrm{CE} + (1-\alpha')\,\mathrm{KL}$
   with no $T^2$. Which $\alpha'$ gives the same gradient *direction* as this book's loss with
   $\alpha = 0.5$ at $T = 4$? Check it on the student's logits.
"""),
solution(r"""
The directions agree when the ratio of the two weights agrees:
$(1-\alpha')/\alpha' = T^2 (1-\alpha)/\alpha = 16$, so $\alpha' = 1/17 \approx 0.059$. The two
gradients then differ by the constant factor $\alpha'/\alpha$.
"""),
code(r"""
T, alpha = 4.0, 0.5
alpha_prime = 1 / (1 + T**2 * (1 - alpha) / alpha)
z_book = student_logits.clone().requires_grad_(True)
z_other = student_logits.clone().requires_grad_(True)
kd_lib.distillation_loss(z_book, teacher_logits, labels, temperature=T, alpha=alpha).backward()
kl_without_t2 = kd_lib.kd_loss(z_other, teacher_logits, T) / T**2
(alpha_prime * F.cross_entropy(z_other, labels) + (1 - alpha_prime) * kl_without_t2).backward()
print(f"alpha' = {alpha_prime:.4f}")
assert torch.allclose(z_other.grad, (alpha_prime / alpha) * z_book.grad, atol=1e-7)
""", "hide-cell"),
md(r"""
2. **`log_target=True`.** `F.kl_div` also accepts the target as log-probabilities
   (`log_target=True`), which is more accurate when the teacher gives some class a probability
   that underflows to 0. Rewrite the correct call with it and check it against `kd_lib.kd_loss`.
"""),
solution(r"""
Pass `F.log_softmax(teacher_logits / T, dim=-1)` as the target with `log_target=True`; the rest
of the call is unchanged.
"""),
code(r"""
T = 4.0
log_q = F.log_softmax(student_logits / T, dim=-1)
log_p = F.log_softmax(teacher_logits / T, dim=-1)
log_target_loss = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * T**2
assert torch.allclose(log_target_loss, kd_lib.kd_loss(student_logits, teacher_logits, T), rtol=1e-5)
print(f"log_target=True: {log_target_loss:.4f}")
""", "hide-cell"),
md(r"""
3. **Gradient accumulation with padding.** Split the token batch above into two micro-batches
   of two sequences each. Show that the mean of the two micro-batches' per-token losses is not
   the per-token loss of the whole batch, and find the weights that fix it.
"""),
solution(r"""
Each micro-batch's mean is over its own real tokens, and the two micro-batches hold different
numbers of them. Weight each micro-batch's mean by its share of the real tokens in the whole
optimizer step; `kd_lib.train` does this when `grad_accum_steps > 1`.
"""),
code(r"""
T = 4.0
halves = [slice(0, 2), slice(2, 4)]
means = [kd_lib.kd_loss(token_student[h], token_teacher[h], T, mask=mask[h]) for h in halves]
weights = [mask[h].sum() / mask.sum() for h in halves]
whole = kd_lib.kd_loss(token_student, token_teacher, T, mask=mask)
print(f"whole batch {whole:.4f}; mean of micro-batch means {sum(means) / 2:.4f}; "
      f"token-weighted {sum(w * m for w, m in zip(weights, means)):.4f}")
assert not torch.allclose(sum(means) / 2, whole, rtol=1e-3)
assert torch.allclose(sum(w * m for w, m in zip(weights, means)), whole, rtol=1e-5)
""", "hide-cell"),
md(r"""
4. **The gradient of the reverse KL.** Show that
   $\dfrac{\partial}{\partial z_i}\,T^2\,\mathrm{KL}(q\,\|\,p) = T\,q_i\big(\log q_i - \log p_i - \mathrm{KL}(q\,\|\,p)\big)$
   for one position, and check it with autograd. Unlike the forward KL's, this gradient is
   weighted by the student's own probabilities $q_i$: classes the student already ignores get
   almost no push, which is the mode-seeking behaviour in gradient form.
"""),
solution(r"""
$\mathrm{KL}(q\,\|\,p) = \sum_c q_c(\log q_c - \log p_c)$. With
$\partial q_c/\partial z_i = q_c(\delta_{ci} - q_i)/T$ and $\sum_c \partial q_c/\partial z_i = 0$,
$\partial\,\mathrm{KL}/\partial z_i = \sum_c \frac{\partial q_c}{\partial z_i}(\log q_c - \log p_c)
= \frac{q_i}{T}\big(\log q_i - \log p_i - \mathrm{KL}(q\,\|\,p)\big)$; multiply by $T^2$.
"""),
code(r"""
T = 4.0
z = student_logits[:1].clone().requires_grad_(True)
kd_lib.reverse_kl(z, teacher_logits[:1], T).backward()
log_q = F.log_softmax(student_logits[:1] / T, dim=-1)
log_p = F.log_softmax(teacher_logits[:1] / T, dim=-1)
reverse = (log_q.exp() * (log_q - log_p)).sum(dim=-1, keepdim=True)
formula = T * log_q.exp() * (log_q - log_p - reverse)
assert torch.allclose(z.grad, formula, atol=1e-6)
print("reverse-KL gradient, row 0:", [round(g, 4) for g in z.grad[0].tolist()])
""", "hide-cell"),
]


def main() -> None:
    for name, cells in [("01_soft_targets.ipynb", CHAPTER_01), ("02_distillation_loss.ipynb", CHAPTER_02)]:
        write(name, cells)


if __name__ == "__main__":
    main()
