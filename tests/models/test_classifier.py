"""The evaluation classifier: its fast inference copy computes the same function."""

import torch

from pixgen.models.classifier import Classifier


def test_inference_copy_matches_the_model_and_leaves_it_alone():
    torch.manual_seed(0)
    model = Classifier(image_size=16, channels=3, num_classes=4, width=8, feature_dim=16)
    model.train()
    x = torch.rand(32, 3, 16, 16) * 2 - 1
    for _ in range(3):  # move the batch-norm running statistics away from their init
        model(x)
    model.eval()
    fast = model.inference_copy()
    f0, p0 = model.features_and_probs(x)
    f1, p1 = fast.features_and_probs(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(f0, f1, atol=1e-5) and torch.allclose(p0, p1, atol=1e-6)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
