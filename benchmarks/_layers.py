"""The conv layers of ResNet-18 and MobileNetV2 at 224x224, batch 1 (distinct shapes, in network order)."""

from __future__ import annotations


def resnet18() -> list[str]:
    """Return ResNet-18's distinct conv shapes (stem, 3x3 blocks, strided 3x3 and 1x1 downsamples)."""
    shapes = ["1x3x224x224:64x7x7:s2:p3", "1x64x56x56:64x3x3:s1:p1"]
    size, channels = 56, 64
    for out in (128, 256, 512):
        shapes += [
            f"1x{channels}x{size}x{size}:{out}x3x3:s2:p1",
            f"1x{out}x{size // 2}x{size // 2}:{out}x3x3:s1:p1",
            f"1x{channels}x{size}x{size}:{out}x1x1:s2",
        ]
        size, channels = size // 2, out
    return shapes


def mobilenet_v2() -> list[str]:
    """Return MobileNetV2's distinct conv shapes (stem, expand 1x1, depthwise 3x3, project 1x1, head)."""
    shapes = ["1x3x224x224:32x3x3:s2:p1", "1x32x112x112:32x3x3:s1:p1:g32", "1x32x112x112:16x1x1"]
    size, cin = 112, 16
    # (expansion, output channels, repeats, first stride) per stage, from the MobileNetV2 paper
    for t, cout, repeats, stride in (
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ):
        for r in range(repeats):
            s = stride if r == 0 else 1
            hidden, out_size = cin * t, size // s
            pads = "p0,0,1,1" if s == 2 else "p1"  # TF-style SAME padding for the strided depthwise convs
            for shape in (
                f"1x{cin}x{size}x{size}:{hidden}x1x1",
                f"1x{hidden}x{size}x{size}:{hidden}x3x3:s{s}:{pads}:g{hidden}",
                f"1x{hidden}x{out_size}x{out_size}:{cout}x1x1",
            ):
                if shape not in shapes:
                    shapes.append(shape)
            size, cin = out_size, cout
    shapes.append(f"1x{cin}x{size}x{size}:1280x1x1")
    return shapes


MODELS = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}
