"""Installs `hf_mim`; the flat `modeling/` folder is installed as `hf_mim.modeling` and the card templates as
`hf_mim.model_cards`, so one copy of each serves both the package and the exported remote code."""
from setuptools import setup

TRAIN = ["accelerate>=1.0", "datasets>=3.0", "evaluate>=0.4", "jinja2>=3.0", "tqdm", "tensorboard"]
TEST = TRAIN + ["pytest>=8", "hypothesis>=6", "pillow>=10", "scikit-image>=0.21"]  # skimage: real photos in the HOG tests

setup(
    name="hf-mim",
    version="0.1.0",
    description="Masked Image Modeling (BEiT, MAE, SimMIM, MaskFeat, CAE) as Hugging Face transformers models",
    python_requires=">=3.10",
    packages=["hf_mim", "hf_mim_cli", "hf_mim.modeling", "hf_mim.model_cards", "hf_mim.metrics"],
    package_dir={"hf_mim": "hf_mim", "hf_mim.modeling": "modeling", "hf_mim.model_cards": "model_cards"},
    package_data={
        "hf_mim": ["sample_data/*/*.parquet", "sample_data/*/*.md", "sample_data/*/*.json", "sample_data/fashion_mnist_video/*.csv",
                   "sample_data/fashion_mnist_video/*/*.mp4"],
        "hf_mim.model_cards": ["*.md"],
        "hf_mim.metrics": ["*/*.py"],
    },
    install_requires=["torch>=2.4", "transformers>=5.0", "safetensors>=0.4", "huggingface_hub>=1.0", "numpy", "pillow"],
    extras_require={"train": TRAIN, "test": TEST, "video": ["av>=14"]},
)
