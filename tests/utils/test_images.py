import numpy as np
import torch
from PIL import Image

from pixgen.utils.images import make_grid, save_grid, save_images, save_npz


def test_grid_layout_and_values():
    x = torch.stack([torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (0, 50, 100, 150, 200)])
    grid = make_grid(x, nrow=3, padding=1, pad_value=255)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert (grid[1:5, 1:5] == 0).all() and (grid[1:5, 6:10] == 50).all()
    assert (grid[6:10, 1:5] == 150).all() and (grid[6:10, 11:15] == 255).all()  # empty cell


def test_float_images_are_mapped_from_minus_one_one(tmp_path):
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)
    path = save_grid(x, tmp_path / "g.png", nrow=1)
    arr = np.asarray(Image.open(path))
    assert arr[2, 2:5].tolist() == [0, 128, 255]


def test_save_images_and_npz(tmp_path):
    x = torch.rand(3, 1, 5, 5) * 2 - 1
    files = save_images(x, tmp_path / "out")
    assert len(files) == 3 and Image.open(files[0]).size == (5, 5)
    path = save_npz(x, tmp_path / "x.npz", labels=torch.tensor([1, 2, 3]))
    data = np.load(path)
    assert data["images"].shape == (3, 5, 5, 1) and data["labels"].tolist() == [1, 2, 3]
