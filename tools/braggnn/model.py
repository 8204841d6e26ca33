"""BraggNN (Liu et al., IUCrJ 2022, the public reference code's network) and the FPGA-class reduced BraggNN
(OpenHLS, Levental et al. 2023) in PyTorch: the reference the C++ kernels in kernels/science are tested against.
Parameter names are the safetensors names the C++ loader reads (docs/KERNELS-BRAGGNN.md)."""
import torch
from torch import nn


class NonLocal(nn.Module):
    """theta, phi, g: 1x1 conv C->C/2; f = softmax(theta^T phi) over the last axis; y = f g^T; 1x1 conv back; + x."""

    def __init__(self, c, inner):
        super().__init__()
        self.inner = inner
        self.theta = nn.Conv2d(c, inner, 1)
        self.phi = nn.Conv2d(c, inner, 1)
        self.g = nn.Conv2d(c, inner, 1)
        self.out = nn.Conv2d(inner, c, 1)

    def forward(self, x):
        n, _, h, w = x.shape
        theta = self.theta(x).view(n, self.inner, h * w).permute(0, 2, 1)  # n, hw, inner
        phi = self.phi(x).view(n, self.inner, h * w)                        # n, inner, hw
        g = self.g(x).view(n, self.inner, h * w).permute(0, 2, 1)          # n, hw, inner
        f = torch.softmax(torch.bmm(theta, phi), dim=-1)                   # n, hw, hw
        y = torch.bmm(f, g).permute(0, 2, 1).contiguous().view(n, self.inner, h, w)
        return self.out(y) + x


class BraggNN(nn.Module):
    """11x11 -> (col, row)/11. 33,172 parameters."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3)
        self.nlb = NonLocal(64, 32)
        self.conv2 = nn.Conv2d(64, 32, 3)
        self.conv3 = nn.Conv2d(32, 8, 3)
        self.fc1 = nn.Linear(200, 16)
        self.fc2 = nn.Linear(16, 8)
        self.fc3 = nn.Linear(8, 4)
        self.fc4 = nn.Linear(4, 2)
        self.fc5 = nn.Linear(2, 2)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x):
        x = self.conv1(x)
        x = self.act(self.nlb(x))
        x = self.act(self.conv2(x))
        x = self.act(self.conv3(x))
        x = x.flatten(1)
        for fc in (self.fc1, self.fc2, self.fc3, self.fc4):
            x = self.act(fc(x))
        return self.fc5(x)


class BraggNNFpga(nn.Module):
    """OpenHLS's reduced BraggNN: conv 1->16; non-local 16->8->16; conv 16->8; conv 8->2; dense 50->16->8->4->2;
    ReLU after every layer (the last included). 3,016 parameters."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.nlb = NonLocal(16, 8)
        self.conv2 = nn.Conv2d(16, 8, 3)
        self.conv3 = nn.Conv2d(8, 2, 3)
        self.fc1 = nn.Linear(50, 16)
        self.fc2 = nn.Linear(16, 8)
        self.fc3 = nn.Linear(8, 4)
        self.fc4 = nn.Linear(4, 2)

    def forward(self, x):
        r = torch.relu
        x = r(self.conv1(x))
        x = r(self.nlb(x))
        x = r(self.conv2(x))
        x = r(self.conv3(x))
        x = x.flatten(1)
        for fc in (self.fc1, self.fc2, self.fc3, self.fc4):
            x = r(fc(x))
        return x


def make(kind):
    return {"braggnn": BraggNN, "braggnn-fpga": BraggNNFpga}[kind]()


def num_params(m):
    return sum(p.numel() for p in m.parameters())
