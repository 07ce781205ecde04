"""Execute chapter notebooks top to bottom in a fresh kernel and write the outputs in place.

    python scripts/execute_notebooks.py book/01_soft_targets.ipynb [more.ipynb ...]

Execution counts run 1..n, and each chapter's wall time is recorded in book/intro/timings.json,
from which the intro's table book/intro/timings.md is generated. The kernel runs with
KD_PROGRESS=0, so that no progress bar is saved in the outputs (a reader running the chapter
sees them). No widget state is saved: the site shows each live widget's static scrubber
instead (the widget cell's output is tagged remove-output), so no page needs the widget
manager. Two runs at once are safe: the timings file is re-read just before it is written.
"""
import argparse
import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TIMINGS = ROOT / "book" / "intro" / "timings.json"
TABLE = ROOT / "book" / "intro" / "timings.md"


def write_table(timings: dict) -> None:
    rows = ["| chapter | seconds (1 CPU thread) | measured |", "|---|---:|---|"]
    for name, record in sorted(timings.items()):
        if (ROOT / "book" / name).exists():
            rows.append(f"| {{doc}}`../{Path(name).stem}` | {record['seconds']:.0f} | {record['date']} |")
    TABLE.write_text("\n".join(rows) + "\n")


def execute(path: Path, timeout: int) -> float:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                            store_widget_state=True)  # False breaks nbclient on Output widgets
    started = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - started
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    if errors:
        raise RuntimeError(f"{path}: {errors[0]['ename']}: {errors[0]['evalue']}")
    notebook.metadata.pop("widgets", None)  # saved widget state: the site would load the manager
    nbformat.write(notebook, path)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--table-only", action="store_true", help="only regenerate timings.md from timings.json")
    parser.add_argument("--unportable", action="store_true",
                        help="execute even where the numerics do not reproduce the committed outputs "
                             "(for a look only: never commit what it writes)")
    args = parser.parse_args()
    if args.table_only:
        return write_table(json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {})
    sys.path.insert(0, str(ROOT))
    from kd_lib.lab.numerics import portable_numerics_status

    status = portable_numerics_status()
    if not status.portable and not args.unportable:
        sys.exit(f"refusing to write outputs that are not comparable with the committed ones: {status}. "
                 "Execute on a machine where they are (see kd_lib/lab/numerics.py), or pass --unportable "
                 "for a look that you do not commit.")
    os.environ["KD_PROGRESS"] = "0"  # the kernel inherits it (kd_lib.runtime.show_progress)
    for path in args.notebooks:
        seconds = execute(path, args.timeout)
        record = {"seconds": round(seconds, 1), "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
                  "date": time.strftime("%Y-%m-%d")}
        print(f"{path}: {seconds:.1f} s", file=sys.stderr)
        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        with open(TIMINGS.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            timings = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
            timings[path.name] = record
            TIMINGS.write_text(json.dumps(dict(sorted(timings.items())), indent=2) + "\n")
            write_table(timings)


if __name__ == "__main__":
    main()
