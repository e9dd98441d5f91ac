r"""The shipped base and oracle measured as docs/shapes.md quotes them, through the shapes evaluators.

  python benchmarks/shipped_base.py --out=docs/benchmarks/shipped_base.json [--count=4000] [--prompts=200]

Renders `count` fresh test pictures of every style (seeds from 9,000,000, the pretraining configs' test set),
then: the oracle on them (shape and colour on single-object pictures); the base's VQ reconstructions of them
(PSNR, the oracle on the reconstructions, per style: the tokens' ceiling); and the base's own pictures of
`prompts` seen-style prompts under both base samplers (shapes_base). About 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from muse_styledrop import evaluators, files, shapes
from muse_styledrop.pipeline import EMBEDDED_BASE, Pipeline
from muse_styledrop.shapes import dataset, grading


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--base", default=str(EMBEDDED_BASE))
  p.add_argument("--count", type=int, default=4000)
  p.add_argument("--prompts", type=int, default=200)
  p.add_argument("--out", default="")
  args = p.parse_args()
  base = Path(args.base)
  with tempfile.TemporaryDirectory() as tmp:
    test = Path(tmp) / "test.npz"
    dataset.save(dataset.render(args.count, first_seed=9_000_000, styles=tuple(shapes.STYLES)), test)
    arrays = files.load_arrays(test)
    grader = grading.grader_or_none("")
    report = {
      "base": str(base),
      "count": args.count,
      "oracle_on_renders": grading.label_accuracy(grader(arrays["images"]), arrays),
    }
    pipe = Pipeline.from_pretrained(base)
    component = evaluators.Component(pipe.vqvae, base / "vqvae", Path(tmp))
    report["vq"] = evaluators.build("shapes_vq", {"test": str(test)})(component).metrics
  component = evaluators.Component(pipe.transformer, base, base)
  report["base_pictures"] = evaluators.build("shapes_base", {"prompts": args.prompts})(component).metrics
  if args.out:
    files.write_json(report, Path(args.out))
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
