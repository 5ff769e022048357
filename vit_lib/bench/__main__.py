"""``python -m vit_lib.bench attention|model [--quick] [--out FILE]`` (see ``vit_lib.bench``)."""

from vit_lib.bench.cli import main

main()
