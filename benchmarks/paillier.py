"""Speed of Paillier aggregation: naive phe against each packed mode, side by side.

Run ``python benchmarks/paillier.py`` for a table, ``--json`` for one JSON object.
Every figure counts all the work of encryption, fresh randomness included: the
short-exponent table is built inside the timed region, and a randomness pool's
filling is timed with its use. Both sides run on the same machine in one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from workbench.crypto import (
    DecryptedSlice,
    EncryptedVector,
    PackedEncoding,
    RandomnessPool,
    aggregate,
    combine_slices,
    decrypt_slice,
    decrypt_vector,
    encrypt_vector,
    generate_keypair,
    generate_sealing_keypair,
    seal,
    shutdown_workers,
    slice_bounds,
    unseal,
)
from workbench.crypto import paillier as raw
from workbench.crypto.workers import available_cores


def _timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def bench_phe(public_key, private_key, count: int, members: int, rng) -> dict:
    """Naive phe: one EncryptedNumber per value, one process."""
    values = rng.uniform(-1, 1, count).tolist()
    seconds, encrypted = _timed(lambda: [public_key.encrypt(v) for v in values])
    others = [
        [public_key.encrypt(v) for v in rng.uniform(-1, 1, count).tolist()]
        for _ in range(min(members - 1, 2))
    ]
    add_seconds, _ = _timed(
        lambda: [a + b for a, b in zip(encrypted, others[0], strict=True)]
    )
    dec_seconds, _ = _timed(lambda: [private_key.decrypt(c) for c in encrypted])
    ciphertext_bytes = (public_key.nsquare.bit_length() + 7) // 8
    return {
        "values": count,
        "encrypt_values_per_s": count / seconds,
        "aggregate_values_per_s": count / add_seconds,
        "decrypt_values_per_s": count / dec_seconds,
        "bytes_per_value": float(ciphertext_bytes),
    }


def bench_mode(
    public_key, private_key, encoding, mode: str, ciphertexts: int, processes: int, rng
) -> dict:
    """One packed mode: encrypt a vector filling ``ciphertexts`` ciphertexts."""
    per = encoding.slots_per_ciphertext(public_key.n.bit_length())
    length = per * ciphertexts
    values = rng.uniform(-1, 1, length)
    raw._SHORT_CACHE.clear()  # count the short-exponent table in the timing

    def run() -> EncryptedVector:
        if mode == "pool":
            with RandomnessPool(
                public_key, short_exponent=True, target=ciphertexts, background=False
            ) as pool:
                pool.fill(ciphertexts)
                return encrypt_vector(public_key, values, encoding, pool=pool)
        return encrypt_vector(
            public_key,
            values,
            encoding,
            private_key=private_key if mode == "crt" else None,
            short_exponent=mode == "short_exponent",
            processes=processes,
        )

    seconds, vector = _timed(run)
    others = [
        encrypt_vector(public_key, values, encoding, short_exponent=True, processes=1)
        for _ in range(3)
    ]
    add_seconds, total = _timed(lambda: aggregate([vector, *others]))
    dec_seconds, _ = _timed(
        lambda: decrypt_vector(private_key, total, processes=processes)
    )
    return {
        "values": length,
        "processes": 1 if mode == "pool" else processes,
        "encrypt_values_per_s": length / seconds,
        "aggregate_values_per_s": 3 * length / add_seconds,
        "decrypt_values_per_s": length / dec_seconds,
        "bytes_per_value": len(vector.to_bytes()) / length,
    }


def bench_round(public_key, private_key, encoding, length, members, processes, rng):
    """A 1M-parameter round for one member: encrypt, aggregate, shared decryption."""
    all_values = [rng.uniform(-1, 1, length) for _ in range(members)]
    values = all_values[0]
    others_seconds, others = _timed(
        lambda: [
            encrypt_vector(
                public_key, v, encoding, short_exponent=True, processes=processes
            ).to_bytes()
            for v in all_values[1:]
        ]
    )
    encrypt_seconds, mine = _timed(
        lambda: encrypt_vector(
            public_key, values, encoding, short_exponent=True, processes=processes
        ).to_bytes()
    )
    uploads = [mine, *others]

    def coordinator() -> EncryptedVector:
        return aggregate([EncryptedVector.from_bytes(b, public_key) for b in uploads])

    aggregate_seconds, total = _timed(coordinator)
    total_bytes = total.to_bytes()

    # Each member decrypts one slice; every slice is the same size, so one
    # member's time is the wall time of the shared step. The other slices are
    # decrypted here too (not counted) so that the result can be checked.
    sealing_private, sealing_public = generate_sealing_keypair()
    bounds = slice_bounds(total.ciphertext_count, members)

    def my_slice() -> bytes:
        received = EncryptedVector.from_bytes(total_bytes, public_key)
        part = decrypt_slice(private_key, received, *bounds[0], processes=processes)
        return seal(part.to_bytes(public_key), sealing_public)

    slice_seconds, sealed_mine = _timed(my_slice)
    sealed = [sealed_mine] + [
        seal(
            decrypt_slice(private_key, total, *b, processes=processes).to_bytes(
                public_key
            ),
            sealing_public,
        )
        for b in bounds[1:]
    ]

    def combine():
        parts = [
            DecryptedSlice.from_bytes(unseal(s, sealing_private), public_key)
            for s in sealed
        ]
        return combine_slices(total, parts)

    combine_seconds, result = _timed(combine)
    levels = sum(encoding.quantize(v).astype(np.int64) for v in all_values)
    assert result.contributions == members
    assert np.array_equal(result.values, encoding.dequantize(levels, members))
    round_seconds = (
        encrypt_seconds + aggregate_seconds + slice_seconds + combine_seconds
    )
    return {
        "length": length,
        "members": members,
        "processes": processes,
        "encrypt_seconds": encrypt_seconds,
        "aggregate_seconds": aggregate_seconds,
        "decrypt_slice_seconds": slice_seconds,
        "combine_seconds": combine_seconds,
        "round_seconds": round_seconds,
        "single_decryptor_seconds_estimate": encrypt_seconds
        + aggregate_seconds
        + slice_seconds * members
        + combine_seconds,
        "others_encrypt_seconds_each": others_seconds / (members - 1),
        "bytes_per_value": len(mine) / length,
        "ciphertexts": total.ciphertext_count,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--phe-values", type=int, default=1000)
    parser.add_argument("--round-length", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--processes", type=int, default=available_cores())
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.phe_values, args.round_length = 100, 50_000

    rng = np.random.default_rng(0)
    insecure = args.key_bits < 2048
    public_key, private_key = generate_keypair(args.key_bits, allow_insecure=insecure)
    encoding = PackedEncoding(clip=1.0, bits=16, max_contributions=args.members)
    sizes = {"textbook": 40, "crt": 160, "short_exponent": 800, "pool": 800}
    if args.quick:
        sizes = {mode: max(4, size // 10) for mode, size in sizes.items()}

    naive = bench_phe(public_key, private_key, args.phe_values, args.members, rng)
    modes = {
        mode: bench_mode(
            public_key, private_key, encoding, mode, count, args.processes, rng
        )
        for mode, count in sizes.items()
    }
    for mode in ("crt", "short_exponent"):
        modes[f"{mode}_1_process"] = bench_mode(
            public_key, private_key, encoding, mode, sizes[mode] // 2, 1, rng
        )
    round_ = bench_round(
        public_key,
        private_key,
        encoding,
        args.round_length,
        args.members,
        args.processes,
        rng,
    )
    shutdown_workers()

    fastest = max(modes.values(), key=lambda m: m["encrypt_values_per_s"])
    fastest_one_core = max(
        (m for m in modes.values() if m["processes"] == 1),
        key=lambda m: m["encrypt_values_per_s"],
    )
    report = {
        "key_bits": args.key_bits,
        "bits": encoding.bits,
        "max_contributions": encoding.max_contributions,
        "slots_per_ciphertext": encoding.slots_per_ciphertext(args.key_bits),
        "cores": available_cores(),
        "processes": args.processes,
        "python": platform.python_version(),
        "encrypt_speedup_vs_phe": fastest["encrypt_values_per_s"]
        / naive["encrypt_values_per_s"],
        "encrypt_speedup_vs_phe_one_core": fastest_one_core["encrypt_values_per_s"]
        / naive["encrypt_values_per_s"],
        "round_seconds_1m": round_["round_seconds"],
        "bytes_per_value": round_["bytes_per_value"],
        "phe": naive,
        "modes": modes,
        "round": round_,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0

    print(
        f"Paillier, {args.key_bits}-bit key, {encoding.bits}-bit values, headroom "
        f"for {encoding.max_contributions} members, {report['cores']} cores"
    )
    header = f"{'mode':<24}{'proc':>5}{'encrypt/s':>12}{'add/s':>13}{'decrypt/s':>11}"
    print(header + f"{'B/value':>9}")
    rows = [("phe (one per value)", {"processes": 1, **naive}), *modes.items()]
    for name, row in rows:
        print(
            f"{name:<24}{row['processes']:>5}{row['encrypt_values_per_s']:>12,.0f}"
            f"{row['aggregate_values_per_s']:>13,.0f}"
            f"{row['decrypt_values_per_s']:>11,.0f}"
            f"{row['bytes_per_value']:>9.2f}"
        )
    print(
        f"encrypt speed-up vs phe: {report['encrypt_speedup_vs_phe']:,.0f}x "
        f"({report['encrypt_speedup_vs_phe_one_core']:,.0f}x on one core)"
    )
    r = round_
    print(
        f"round of {r['length']:,} values, {r['members']} members: encrypt "
        f"{r['encrypt_seconds']:.2f} s + aggregate {r['aggregate_seconds']:.2f} s + "
        f"decrypt one slice {r['decrypt_slice_seconds']:.2f} s + combine "
        f"{r['combine_seconds']:.2f} s = {r['round_seconds']:.2f} s "
        f"({r['bytes_per_value']:.2f} bytes per value)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
