"""``pmc2 demo``: the whole system on embedded defaults, offline.

1. ``pmc2 up`` in-process terms: the attestation service trusting the simulated SEV-SNP
   platform, the operator's registration of the enclave's measurement and launch
   configuration through the admin API, cloud inference, the enclave app and the gateway,
   each a child process on free loopback ports (``pmc2._stack.DevStack``).
2. A client built with the SDK (``client.Client``) pinned to the attestation service's
   keys and expecting the registered measurement, launch configuration and egress
   policy: it attests, then sends each photo (JPEG 4:4:4, sealed with HPKE) through the
   gateway.
3. A table per photo: label, S1 bytes (the client's JPEG), S2 bytes (the neural
   bit-string the enclave sent to the cloud), and the latency of each stage.
4. The stack is stopped.

Photos: scikit-image's sample photos (a package that ships them), or ``--images DIR``
(``make demo IMAGES=dir``). ``--trust-only`` instead walks the trust bootstrap step by
step (``pmc2._trust_demo``).
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import warnings
from pathlib import Path
from typing import Any

from pmc2._trust_demo import add_trust_args, run_trust_demo

__all__ = ["register", "sample_photos"]

# scikit-image's sample photos that show something a CIFAR-10 model knows.
SAMPLE_PHOTOS = ("chelsea.png", "rocket.jpg", "motorcycle_left.png", "astronaut.png")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def sample_photos() -> list[Path]:
    """The sample photos shipped by scikit-image (found without importing it)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-image is not installed: pass --images DIR")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    photos = [data / name for name in SAMPLE_PHOTOS if (data / name).is_file()]
    if not photos:
        raise FileNotFoundError(f"no sample photos in {data}: pass --images DIR")
    return photos


def _images(directory: str | None) -> list[Path]:
    if directory is None:
        return sample_photos()
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"--images {root}: not a directory")
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise FileNotFoundError(f"--images {root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(results: list[Any]) -> str:
    head = (
        "image",
        "label",
        "score",
        "S1 B",
        "S2 B",
        "jpeg",
        "seal",
        "rtt",
        "open",
        "perturb",
        "encode",
        "cloud",
        "total ms",
    )
    rows = [head]
    for r in results:
        server = r.timings.server_ms
        s2 = r.bytes_sent.bitstring_per_image
        rows.append(
            (
                Path(r.source).name[:24],
                r.label_name or str(r.label),
                f"{r.score:.2f}",
                str(r.bytes_sent.jpeg),
                "-" if s2 is None else f"{s2:.1f}",
                _ms(r.timings.jpeg_ms),
                _ms(r.timings.seal_ms),
                _ms(r.timings.round_trip_ms),
                _ms(server.get("open")),
                _ms(server.get("perturb")),
                _ms(server.get("encode")),
                _ms(server.get("cloud")),
                _ms(r.timings.total_ms),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if args.trust_only:
        return run_trust_demo(args)
    from attestation import InsecureRootsWarning
    from client import Client, ClientConfig, ClientError, Expectations, JwksPin
    from client._trust import InsecureClientWarning
    from pmc2._stack import DevStack, Ports, StackError, StackOptions, free_ports
    from pmc2._stack import write_tiny_bundle as tiny
    from vision import DEFAULT_BUNDLE_DIR

    try:
        images = _images(args.images)
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    state = Path(args.state) if args.state else Path(tempfile.mkdtemp(prefix="pmc2-demo-"))
    bundle = Path(args.bundle) if args.bundle else DEFAULT_BUNDLE_DIR
    if not (bundle / "manifest.json").is_file():
        print(
            f"note: no model bundle at {bundle}; using an untrained tiny one (labels mean nothing)"
        )
        bundle = tiny(state / "tiny-bundle")
    ovmf = Path(args.ovmf)
    if not ovmf.is_file():
        print(f"error: firmware {ovmf} not found (run `make sysdeps` or pass --ovmf)")
        return 2

    print(f"== PMC2 demo: {len(images)} photo(s), state {state}")
    options = StackOptions(
        state_dir=state,
        bundle_dir=bundle,
        ports=Ports(*free_ports(4)),
        ovmf=ovmf,
        vcpus=args.vcpus,
        progress=lambda line: print(f"   {line}"),
    )
    with warnings.catch_warnings():
        # Both sides trust the simulated platform on purpose; they say so in the output.
        warnings.simplefilter("ignore", InsecureRootsWarning)
        warnings.simplefilter("ignore", InsecureClientWarning)
        try:
            with DevStack(options) as stack:
                info = stack.client_info()
                print("\n== client: attest, then send (SDK)")
                print("   trusting the SIMULATED platform (development only; no hardware)")
                config = ClientConfig(
                    gateway_url=info["gateway_url"],
                    attestation_url=info["attestation_url"],
                    jwks_pin=JwksPin(thumbprints=info["jwks_thumbprints"]),
                    expect=Expectations(
                        measurements=[info["measurement"]],
                        launch_config_digests=[info["launch_config_digest"]],
                        egress_policy_digests=[info["egress_policy_digest"]],
                        model_bundle_digests=[info["model_bundle_digest"]],
                        allow_insecure_simulated_platform=True,
                    ),
                )
                with Client(config) as client:
                    attestation = client.attest()
                    for key, value in attestation.summary().items():
                        print(f"   {key:<22} {value}")
                    results = client.classify(images)
                print()
                print(_table(list(results)))
                print(
                    "\nS1: the client's JPEG (4:4:4) sealed to the enclave; S2: the neural "
                    "bit-string the enclave sent to the cloud (per image, batch share).\n"
                    "Stages in ms: client JPEG, seal, round trip; in the enclave: open, "
                    "perturb, encode, cloud (decode + classify + transfer)."
                )
        except (StackError, ClientError, ValueError) as exc:
            print(f"\nPMC2 demo FAILED: {exc}")
            return 1
    print("\nPMC2 demo passed (stack stopped)")
    return 0


def register(sub: argparse._SubParsersAction[Any], bench: argparse._SubParsersAction[Any]) -> None:
    """Add ``demo`` to the ``pmc2`` parser."""
    del bench
    p = sub.add_parser(
        "demo",
        help="the whole system on embedded defaults: attest, classify sample photos, stop",
    )
    p.add_argument("--images", help="a directory of your own photos (default: sample photos)")
    p.add_argument("--state", help="state directory (default: a new temporary one)")
    p.add_argument("--bundle", help="vision bundle (default: the committed one)")
    p.add_argument(
        "--trust-only", action="store_true", help="walk the trust bootstrap step by step instead"
    )
    add_trust_args(p)
    p.set_defaults(handler=_run)
