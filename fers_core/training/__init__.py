"""Training FERS models on background rasters: stage 1 (spectral) and stage 2 (spatial).

Modules: ``defaults`` (settings and choices, no torch), ``data`` (background patches,
preprocessed as at detection), ``losses``, ``loop`` (seeded epoch loop, progress, cancel,
checkpoints and resume), ``stage1`` (reverse distillation), ``stage2`` (the rebellious student)
and ``run`` (checks and the whole run: :func:`fers_core.training.run.train_model`). Every module
but ``defaults`` imports torch; this package itself imports nothing.
"""
