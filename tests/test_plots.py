import matplotlib.image
import numpy as np
import pytest
import torch

from proselab.plots import plot_attention

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _weights(t: int, s: int) -> torch.Tensor:
    return torch.softmax(torch.randn(t, s, generator=torch.Generator().manual_seed(0)), dim=-1)


def test_plot_attention_writes_png(tmp_path):
    src = ["Ġthe", "Ġcat", "Ġsat", "."]
    tgt = ["le", "Ġchat", "<eos>"]
    out = plot_attention(_weights(3, 4), src, tgt, tmp_path / "sub" / "attn.png", title="example")
    assert out == tmp_path / "sub" / "attn.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert not list(tmp_path.glob("sub/.*.tmp"))  # the atomic write left no temporary behind


def test_plot_attention_numpy_and_size_grows_with_tokens(tmp_path):
    small = plot_attention(np.full((2, 3), 1 / 3), list("abc"), list("xy"), tmp_path / "small.png")
    big = plot_attention(_weights(40, 50).numpy(), [f"s{i}" for i in range(50)],
                         [f"t{i}" for i in range(40)], tmp_path / "big.png")
    h_small, w_small = matplotlib.image.imread(small).shape[:2]
    h_big, w_big = matplotlib.image.imread(big).shape[:2]
    assert h_big > h_small and w_big > w_small


def test_plot_attention_many_tokens_thins_labels(tmp_path):
    n = 150
    out = plot_attention(_weights(n, n), [f"s{i}" for i in range(n)], [f"t{i}" for i in range(n)],
                         tmp_path / "many.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_attention_odd_tokens(tmp_path):
    src = ["line\n", "\t", " ", "", "$x$ and $y$", "Ċ", "ĠĠĠĠ", "a" * 40, "\x00"]
    tgt = ["\n\n", "Ġhello", "é"]
    out = plot_attention(_weights(3, len(src)).to(torch.bfloat16), src, tgt, tmp_path / "odd.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_attention_shape_error(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(3, 4\).*2 generated tokens.*4 source tokens"):
        plot_attention(_weights(3, 4), list("abcd"), list("xy"), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="2-D"):
        plot_attention(np.ones(4), list("abcd"), ["x"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
