"""tower-megatron: the Tower+ recipe (CPT → SFT → WPO → GRPO) as a plugin layer on Megatron-Core."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOT = Path(__file__).parent

setup(
    name="tower-megatron",
    version="0.1.0",
    description="Multilingual translation + general LLM training on Megatron-Core (Tower+ recipe)",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8")
    if (ROOT / "README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.12",
    # Namespace discovery so the data folders under resources/ (corpus, tokenizer) ship as
    # package data of an installed wheel; `resource:` paths in configs resolve through them.
    packages=find_namespace_packages(include=["tower_megatron", "tower_megatron.*"]),
    include_package_data=True,
    package_data={"tower_megatron.resources": ["**/*"]},
    install_requires=[
        "megatron-core>=0.19,<0.20",
        "torch>=2.6",
        "numpy",
        "omegaconf>=2.3",
        "pyyaml",
        "sentencepiece",
        "tokenizers",
        "transformers>=4.45",
        "safetensors",
        "wandb",
        "tensorboard",
        "tqdm",
        "rich",
        "psutil",  # megatron-core's dist_checkpointing needs it but does not declare it
        "py3langid",
        "langcodes",  # BCP 47 validation and language names in translation templates
        "language-data",  # langcodes' names ("Portuguese (Portugal)")
        "zstandard",
        "matplotlib",
        "sacrebleu",
    ],
    extras_require={
        "gpu": ["transformer-engine[pytorch]"],
        "tools": ["polib"],  # tools/build_corpus.py reads .po catalogs
        "dev": ["pytest>=8", "pytest-timeout", "ruff"],
    },
    entry_points={"console_scripts": ["tower-megatron=tower_megatron.cli:main"]},
)
