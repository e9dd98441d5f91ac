"""General pretraining objectives for the base's three components: a VQ tokenizer, a CLIP, a U-ViT.

They train on any .npz of pictures and captions (the shapes world's data sets are one); how good the result is,
the evaluators of the config's `evals` measure.
"""

from muse_styledrop.pretraining.clip import CLIPObjective
from muse_styledrop.pretraining.uvit import UVitObjective
from muse_styledrop.pretraining.vq import VQObjective

OBJECTIVES = {"vq": VQObjective, "clip": CLIPObjective, "uvit": UVitObjective}

__all__ = ["OBJECTIVES", "CLIPObjective", "UVitObjective", "VQObjective"]
