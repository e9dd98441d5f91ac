r"""Write a full-size aMUSEd-256 directory with random weights, saved by diffusers/transformers themselves.

  python benchmarks/make_random_amused.py --out=/tmp/amused-256-random
  python -m muse_styledrop.parity --reference=/tmp/amused-256-random

The published architecture (transformer, VQ-GAN, CLIP ViT-L/14 text tower)
with fp32 weights plus an fp16 variant, so the parity command and the
loaders can be checked at full size where the real files cannot be
downloaded. The tokenizer is a small byte-level CLIP BPE (the real vocabulary
is not shipped); ids stay inside the text encoder's 49408-token table.
"""

import argparse
from pathlib import Path

import torch


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True)
  args = p.parse_args()
  import torch_amused
  from diffusers import AmusedPipeline, AmusedScheduler
  from transformers import CLIPTokenizer

  from muse_styledrop.tokenizer import build_clip_tokenizer

  out = Path(args.out)
  build_clip_tokenizer(["a", "watercolor", "painting", "of", "house", "cat"], out.parent / (out.name + "-tokenizer"))
  tokenizer = CLIPTokenizer.from_pretrained(str(out.parent / (out.name + "-tokenizer")))
  uvit, vqvae, text = torch_amused.components(
    eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id
  )
  with torch.no_grad():  # diffusers zero-initialises some weights; make every one of them count
    for model in (uvit, vqvae):
      for name, param in model.named_parameters():
        if param.abs().max() == 0 or (param == 1).all():
          param.copy_(torch.randn_like(param) * 0.02 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
  pipe = AmusedPipeline(
    vqvae=vqvae.eval(),
    tokenizer=tokenizer,
    text_encoder=text.eval(),
    transformer=uvit.eval(),
    scheduler=AmusedScheduler(mask_token_id=8255),
  )
  pipe.save_pretrained(str(out))
  pipe.to(torch.float16).save_pretrained(str(out), variant="fp16")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
