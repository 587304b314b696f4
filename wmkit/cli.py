"""The ``wmkit`` console command.

``wmkit --help`` lists the subcommands. Chapters add theirs by registering a module below; the module
is imported only when its subcommand runs, so ``wmkit --help`` stays fast. A subcommand module exposes
``main(argv: list[str]) -> None`` and parses its own options (usually with wmkit.config.parse_config).
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module:function, one-line description)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("wmkit.cli:info", "print the active profile, device, and library versions"),
    "bench": ("wmkit.bench:main", "run a benchmark; prints JSON lines (see `wmkit bench --help`)"),
    "walltime": ("wmkit.walltime:main", "expected training time of a notebook at a profile, measured on this machine"),
    "worldmodels": ("wmkit.worldmodels.cli:main",
                    "stage 1 (Ha & Schmidhuber 2018): collect | train-vae | train-mdnrnn | "
                    "train-controller | dream"),
    "dreamer": ("wmkit.dreamer.cli:main", "stage 2 (DreamerV3): train | evaluate"),
    "data": ("wmkit.data.cli:main", "stages 3-4 data: crafter | driving | atari | shard | info"),
    "genie": ("wmkit.genie.cli:main", "stage 3a (Genie): train-tokenizer | train-lam | train-dynamics | play"),
    "diffusion": ("wmkit.diffusion.cli:main", "stage 3b (DIAMOND / GameNGen / Dreamer 4): train | sample | play"),
    "jepa": ("wmkit.jepa.cli:main", "stage 4 (V-JEPA): train | probe | plan"),
}


def info(argv: list[str]) -> None:
    """Print what a bug report needs: profile, device, versions."""
    argparse.ArgumentParser(prog="wmkit info", description=info.__doc__).parse_args(argv)
    import numpy as np
    import torch

    import wmkit
    from wmkit.profiles import profile
    from wmkit.utils import pick_device

    p = profile()
    print(p)
    print(f"device: {pick_device()}")
    from wmkit.bench import cpu_model
    from wmkit.malloc import applied
    from wmkit.precision import cpu_bf16_native

    print(f"cpu: {cpu_model()}, torch kernels {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads; freed memory kept (wmkit.malloc): {'yes' if applied() else 'no'}; "
          f"bf16 kernels: {'native' if cpu_bf16_native() else 'emulated (bf16 much slower than fp32 here)'}")
    print(f"wmkit {wmkit.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
          f"python {sys.version.split()[0]}")
    for chapter in p.chapters:
        print(f"\n[{chapter}]\n{p.table(chapter)}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    width = max(len(k) for k in SUBCOMMANDS)
    parser = argparse.ArgumentParser(
        prog="wmkit",
        description="World models, hands-on. Each subcommand has its own --help.",
        epilog="subcommands:\n" + "\n".join(f"  {k:<{width}}  {v[1]}" for k, v in SUBCOMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("command", nargs="?", choices=sorted(SUBCOMMANDS), metavar="COMMAND",
                        help="one of: " + ", ".join(SUBCOMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.version:
        import wmkit

        print(wmkit.__version__)
        return
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    target = SUBCOMMANDS[args.command][0]
    mod_name, fn_name = target.split(":")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and mod_name.startswith(e.name):
            raise SystemExit(f"wmkit {args.command}: this chapter is not available yet ({e})") from e
        raise
    getattr(module, fn_name)(args.args)


if __name__ == "__main__":
    main()
