"""Prefix each chapter's title with its number from the file name: '# Title' -> '# 7. Title'.

Chapters keep the numbers of the book's plan (01-11, and 07b, 07c after 07) even while some are still to be written,
so the site does not number them itself (_toc.yml has no `numbered:`); cross-references in the
prose ("chapter 7") then match the titles. Only the first markdown cell changes; outputs stay.
"""
import re
import sys
from pathlib import Path

import nbformat

for path in map(Path, sys.argv[1:] or sorted(Path("book").glob("[0-9][0-9]*_*.ipynb"))):
    digits, letter = re.match(r"(\d+)([a-z]?)_", path.name).groups()  # 07b_... -> "7b"
    number = f"{int(digits)}{letter}"
    notebook = nbformat.read(path, as_version=4)
    cell = next(c for c in notebook.cells if c.cell_type == "markdown")
    title, _, rest = cell.source.partition("\n")
    new_title = re.sub(r"^#\s+(?:\d+[a-z]?\.\s+)?", f"# {number}. ", title)
    if new_title != title:
        cell.source = new_title + "\n" + rest
        nbformat.write(notebook, path)
        print(f"{path}: {new_title}")
