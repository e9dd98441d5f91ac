"""The optimizer a config's `optimizer` block describes."""

from __future__ import annotations

import optax

SCHEDULES = ("constant", "cosine")


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
