"""PiCANet's forward on CUDA in fp32 and bf16, NCHW and channels_last, and where the slowest one's time goes.

    python bench/picanet_cuda_layout.py [--layout LLL] [--batch 4] [--size 224] [--width 1.0]

Untrained weights (the cost does not depend on them). Each variant: 2 warm-up passes, then the mean of 3
timed passes (CUDA-synchronised); then torch.profiler's top CUDA kernels of one bf16 channels_last pass.
This measurement is why `saliency.predictor.inference_precision` keeps PiCANet in fp32 on CUDA.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from common.cli import OneLineParser
from saliency.picanet import PiCANet, PiCANetConfig


def ms_per_pass(model: torch.nn.Module, x: torch.Tensor, bf16: bool, passes: int = 3) -> float:
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        for _ in range(2):
            model(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(passes):
            model(x)
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / passes


def main() -> None:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", default="LLL", choices=["LLL", "GGLLL"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--width", type=float, default=1.0)
    args = p.parse_args()
    cfg = PiCANetConfig(layout=args.layout, input_size=args.size, width=args.width, batch_norm=False)
    model = PiCANet(cfg).cuda().eval()
    x = torch.rand(args.batch, 3, args.size, args.size, device="cuda")  # [B, 3, S, S]
    print(
        f"{torch.cuda.get_device_name()}; PiCANet {args.layout}, {args.size} px, width {args.width}, batch {args.batch}"
    )
    print("| layout | fp32 ms | bf16 ms |\n|---|---|---|")
    for name, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        m, xm = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        print(f"| {name} | {ms_per_pass(m, xm, False):.1f} | {ms_per_pass(m, xm, True):.1f} |")
    with profile(activities=[ProfilerActivity.CUDA]) as prof, torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
        model(x.contiguous(memory_format=torch.channels_last))
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8))


if __name__ == "__main__":
    main()
