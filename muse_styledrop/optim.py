"""The optimizer a config's `optimizer` block describes."""

from __future__ import annotations

import math

import optax

SCHEDULES = ("constant", "cosine")


def check_run_lengths(config) -> None:
  """One line for impossible run lengths and rates in a trainer's config, before anything is loaded."""
  for key in ("steps", "steps_per_call", "batch_size"):
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"config.{key}={config[key]!r} must be a whole number of at least 1")
  if config.steps % config.steps_per_call:
    raise ValueError(f"config.steps={config.steps} is not a multiple of config.steps_per_call={config.steps_per_call}")
  rate = config.optimizer.learning_rate
  if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
    raise ValueError(f"config.optimizer.learning_rate={rate!r} must be a finite number above 0")
  for key, value in config.checkpoint.items():
    if key.startswith("every") and value < 0:
      raise ValueError(f"config.checkpoint.{key}={value} must be 0 (only at the end) or more")


def make_optimizer(c, total_steps: int = 0) -> optax.GradientTransformation:
  """Adam (AdamW when weight_decay > 0), optional global-norm clipping, a linear warmup, then a constant rate
  (schedule 'constant', the paper's) or a cosine decay to 5% over `total_steps` (schedule 'cosine', pretraining)."""
  if c.schedule not in SCHEDULES:
    raise ValueError(f"config.optimizer.schedule={c.schedule!r}; use one of {', '.join(SCHEDULES)}")
  warmup = max(c.warmup_steps, 1)
  if c.schedule == "cosine":
    schedule = optax.warmup_cosine_decay_schedule(
      0.0, c.learning_rate, warmup, max(total_steps, warmup + 1), c.learning_rate * 0.05
    )
  elif c.warmup_steps == 0:
    schedule = optax.constant_schedule(c.learning_rate)
  else:
    schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, c.learning_rate, warmup), optax.constant_schedule(c.learning_rate)], [warmup]
    )
  adam = (
    optax.adamw(schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay)
    if c.weight_decay
    else optax.adam(schedule, b1=c.b1, b2=c.b2, eps=c.eps)
  )
  return optax.chain(optax.clip_by_global_norm(c.grad_clip), adam) if c.grad_clip else adam
