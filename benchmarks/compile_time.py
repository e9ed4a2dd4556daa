"""Cold and warm compile time of the tutorial Net's training step on the C++ backend.

    python benchmarks/compile_time.py CACHE_DIR   # run twice: the second run is warm
"""
import argparse
import time

import torch
import torch.nn.functional as F

import lazytriton
from lazytriton.testing.models import TutorialNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache_dir", help="the kernel cache: a fresh dir is cold, a reused one warm")
    args = parser.parse_args()
    torch.set_num_threads(2)
    lazytriton.init("cpp", cache_dir=args.cache_dir)
    torch.manual_seed(0)
    m = TutorialNet().to("lazy")
    opt = torch.optim.Adadelta(m.parameters(), lr=1.0)
    for i in range(2):
        t = time.perf_counter()
        x = torch.randn(64, 1, 28, 28).to("lazy")
        y = torch.randint(0, 10, (64,)).to("lazy")
        opt.zero_grad()
        F.nll_loss(m(x), y).backward()
        opt.step()
        lazytriton.mark_step()
        lazytriton.wait_device_ops()
        print(f"step {i + 1}: {time.perf_counter() - t:.2f} s, "
              f"compile {lazytriton.metrics.timing_total('compile'):.2f} s, "
              f"KernelCompile={lazytriton.metrics.counter_value('KernelCompile')} "
              f"KernelCacheLoad={lazytriton.metrics.counter_value('KernelCacheLoad')}")


if __name__ == "__main__":
    main()
