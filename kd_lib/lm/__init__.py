"""The language-model kit: a known synthetic language, a tiny GPT, sampling, teacher caches.

* :mod:`~kd_lib.lm.language` - a probabilistic grammar whose true next-token distribution is known;
* :mod:`~kd_lib.lm.gpt` - a small GPT (and initialising a student from a teacher's blocks);
* :mod:`~kd_lib.lm.hf` - Hugging Face ``transformers`` models and ``tokenizers`` in kd_lib.train;
* :mod:`~kd_lib.lm.generation` - sampling (for sequence-level and on-policy distillation);
* :mod:`~kd_lib.lm.topk` - top-k teacher caches;
* :mod:`~kd_lib.lm.metrics` - KL to the true language, and the chapter's LM metrics.
"""
