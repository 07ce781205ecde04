"""Shared test setup: one torch thread, as in the chapters.

Results are bit-identical at a fixed thread count, and small models run fastest (and are not
slowed 10-100x by a busy second core) on one thread.
"""
import torch

torch.set_num_threads(1)
