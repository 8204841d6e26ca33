"""PtychoNN reference networks in PyTorch (a tool for training, goldens and benchmarks only).

PtychoNN (Cherukara et al., APL 2020): input 1x64x64; 3x3 convolutions with padding 1 and ReLU;
encoder [32,32]-maxpool-[64,64]-maxpool-[128,128]-maxpool; two decoders with separate weights, each
[128,128]-up-[64,64]-up-[64,64]-up-conv 64->1; amplitude head sigmoid, phase head tanh*pi.
1,247,074 parameters.

PtychoNN edge (Babu et al., Nat. Commun. 2023): phase only, input 1x128x128; encoder 16,32,64,128
(conv-relu-conv-relu-maxpool each); decoder 128,64,32,16 (conv-relu-conv-relu, then bilinear x2);
conv 16->1, tanh*pi. 733,921 parameters.

Upsampling is bilinear x2 with half-pixel centres (align_corners=False). Parameter names are what
the C++ loader (kernels/science/ptychonn.cc) expects: "<block>.<i>.weight" / ".bias".
"""
import math

import numpy as np

import torch
from torch import nn
import torch.nn.functional as F


def conv(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)


class Up(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def conv_relu(cin, cout):
    return [conv(cin, cout), nn.ReLU()]


class PtychoNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            *conv_relu(1, 32), *conv_relu(32, 32), nn.MaxPool2d(2),
            *conv_relu(32, 64), *conv_relu(64, 64), nn.MaxPool2d(2),
            *conv_relu(64, 128), *conv_relu(128, 128), nn.MaxPool2d(2))
        self.amplitude = self._decoder()
        self.phase = self._decoder()

    @staticmethod
    def _decoder():
        return nn.Sequential(
            *conv_relu(128, 128), *conv_relu(128, 128), Up(),
            *conv_relu(128, 64), *conv_relu(64, 64), Up(),
            *conv_relu(64, 64), *conv_relu(64, 64), Up(),
            conv(64, 1))

    def forward(self, x):
        z = self.encoder(x)
        return torch.sigmoid(self.amplitude(z)), torch.tanh(self.phase(z)) * math.pi


class PtychoNNEdge(nn.Module):
    def __init__(self):
        super().__init__()
        enc = []
        cin = 1
        for c in (16, 32, 64, 128):
            enc += [*conv_relu(cin, c), *conv_relu(c, c), nn.MaxPool2d(2)]
            cin = c
        self.encoder = nn.Sequential(*enc)
        dec = []
        for c in (128, 64, 32, 16):
            dec += [*conv_relu(cin, c), *conv_relu(c, c), Up()]
            cin = c
        dec += [conv(16, 1)]
        self.decoder = nn.Sequential(*dec)

    def forward(self, x):
        return torch.tanh(self.decoder(self.encoder(x))) * math.pi


def param_count(model):
    return sum(p.numel() for p in model.parameters())


def _splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def seeded_weights(model, seed):
    """Seeded random weights that the C++ side can draw too (science::SeededPtychoWeights):
    element k (counting through the state_dict in order) is uniform in +-1/sqrt(fan_in), PyTorch's
    default range, from splitmix64(seed * 2^40 + k). Returns {name: float32 array}."""
    out = {}
    k = 0
    with np.errstate(over="ignore"):
        for name, p in model.state_dict().items():
            n = p.numel()
            fan_in = model.state_dict()[name.replace(".bias", ".weight")][0].numel()
            idx = np.uint64(seed) * np.uint64(1 << 40) + np.arange(k, k + n, dtype=np.uint64)
            u = (_splitmix64(idx) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
            out[name] = ((2 * u - 1) / math.sqrt(fan_in)).astype(np.float32).reshape(tuple(p.shape))
            k += n
    return out


def seeded_random(cls, seed):
    """The model with seeded_weights(seed)."""
    model = cls().eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in seeded_weights(model, seed).items()})
    return model


if __name__ == "__main__":
    print("PtychoNN", param_count(PtychoNN()))
    print("PtychoNNEdge", param_count(PtychoNNEdge()))
