"""muse_styledrop: StyleDrop on Muse-family masked image transformers, in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="muse_styledrop",
    version="0.1.0",
    description="StyleDrop (style tuning of masked generative image transformers) in JAX/Flax NNX",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["muse_styledrop", "muse_styledrop.*"]),
    package_data={"muse_styledrop": ["assets/**/*"]},
    install_requires=[
        "jax>=0.6",
        "flax>=0.12",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "ml_collections>=1.0",
        "absl-py>=2.0",
        "numpy>=1.26",
        "pillow>=10.0",
        "safetensors>=0.4",
        "transformers>=4.45",
        "grain>=0.2",
        "tqdm>=4.66",
        "scipy>=1.11",  # Voronoi cells of two shapes-world styles (KD-tree)
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
        "etils[epath]>=1.5",  # one path type for local folders and gs:// or s3:// URIs (Orbax's)
    ],
    extras_require={
        # The PyTorch originals, for parity tests and side-by-side benchmarks only; pytest-xdist runs the
        # suite on two workers (pytest.ini); Playwright drives a system Chromium in the browser tests; a local
        # Cloud Storage emulator serves the gs:// tests; peft lets diffusers load our LoRA export; nbclient,
        # ipykernel and jupytext run the Colab notebook and check it against its text form.
        "test": [
            "pytest>=8",
            "pytest-xdist>=3",
            "torch==2.13.0",
            "diffusers>=0.32",
            "ruff>=0.6",
            "playwright>=1.40",
            "gcsfs>=2024.2",
            "gcp-storage-emulator>=2024.8",
            "peft>=0.13",
            "nbclient>=0.10",
            "ipykernel>=6.29",
            "jupytext>=1.16",
        ],
        "gcs": ["gcsfs>=2024.2"],  # gs:// workdirs, models and style images
        "bench": ["peft>=0.13"],  # diffusers' LoRA recipe in benchmarks/train_step.py
        "tfds": ["tensorflow-datasets"],
        # libtpu: runs on a TPU VM, and lets `python -m muse_styledrop.aot` compile for TPU slices on any machine
        "tpu": ["jax[tpu]"],
    },
)
