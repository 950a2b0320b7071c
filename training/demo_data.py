"""Seeded demo data: labelled support messages in two domains with a controllable shift between them.

Domain **A** is formal e-mail support ("I was charged twice on my invoice"). Domain **B** is chat slang
about a new product line: different cue words for each label ("they yoinked my money twice"), emoji
(which the MiniLM vocabulary maps to ``[UNK]``, so the unknown-token rate rises) and product names that
contain *other* labels' domain-A cue words ("Parcel Pilot", "Password Vault X"). A model trained on A
therefore loses accuracy on B (it follows the misleading product names), is less confident there, and
regains the accuracy after fine-tuning on B.

``shift`` in [0, 1] is the probability that each part of a domain-B message (template, cue, product
name) is drawn from B's vocabulary instead of A's: 0 makes B indistinguishable from A, 1 is fully B.
Users bring their own data the same way: a table with a ``text`` and a ``label`` column.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

LABELS = ("billing", "technical", "account", "shipping")

_CUES_A = {
    "billing": ["invoice", "refund", "payment", "billing statement", "credit card charge", "subscription fee",
                "duplicate charge", "receipt"],
    "technical": ["error message", "software update", "application crash", "connection problem", "installation",
                  "firmware version", "screen freeze", "bug report"],
    "account": ["password reset", "login", "username", "profile settings", "two-factor authentication",
                "email address on file", "account security", "account deletion"],
    "shipping": ["delivery", "package", "tracking number", "shipment", "courier", "parcel",
                 "delivery address", "estimated arrival date"],
}
_CUES_B = {
    "billing": ["they yoinked my money twice", "zorp coins vanished after topup", "promo code didnt stick at checkout",
                "sub auto renewed w/o asking", "cashback never landed", "wallet got dinged for nothing",
                "paid but it says unpaid lol", "got hit with a surprise fee"],
    "technical": ["keeps bricking after the patch", "screen goes brr then black", "firmware borked again",
                  "bluetooth pairing is cooked", "lagging like crazy", "lights blinking nonstop",
                  "wont boot past the logo", "app yeets me out every 5 sec"],
    "account": ["locked out of my stuff", "otp code never shows up", "someone changed my handle",
                "sus sign in from another country", "my creds stopped working", "need to nuke my acc",
                "cant verify its me", "got logged out everywhere"],
    "shipping": ["where my stuff at", "drop never showed up", "box came all smashed", "driver yeeted it over the fence",
                 "stuck at the hub for days", "eta keeps slipping", "marked delivered but nothing here",
                 "sent to my old place"],
}
_PRODUCTS_A = ["laptop", "phone", "headphones", "tablet", "smart watch", "router", "camera", "speaker"]
# Each domain-B product name carries another label's domain-A cue word: a misleading feature for a model
# that only knows domain A, which fine-tuning on B teaches it to ignore.
_PRODUCTS_B = ["Parcel Pilot", "Password Vault X", "Invoice Cam", "Crash Pad Mini", "Refund Runner",
               "Login Lamp", "Tracking Tag", "Bug Buddy Pro", "Courier Cube", "Payment Pod"]
_TEMPLATES_A = [
    "Hello, I have a question about the {cue} for my {product}.",
    "Could you please help me with the {cue} on order {num}?",
    "Dear support, there is a problem with the {cue} for my new {product}.",
    "I would like some information regarding the {cue}, order number {num}.",
    "Good morning, I noticed an issue with the {cue} yesterday. My {product} order is {num}.",
    "Please advise regarding the {cue} of my {product} purchase.",
]
_TEMPLATES_B = [
    "yo my {product} {cue} 😤😤",
    "{cue} on the {product} help 💀💀",
    "bruh {cue}. {product} #{num} 🫠",
    "ngl {cue} 🙃 {product} 🙄",
    "{product}: {cue}!!! 😡😡",
    "hey so {cue}?? got the {product} last wk 🤷",
]


def _message(rng: random.Random, label: str, use_b: float) -> str:
    """One message; each part independently comes from domain B with probability ``use_b``."""
    template = rng.choice(_TEMPLATES_B if rng.random() < use_b else _TEMPLATES_A)
    cue = rng.choice(_CUES_B[label] if rng.random() < use_b else _CUES_A[label])
    product = rng.choice(_PRODUCTS_B if rng.random() < use_b else _PRODUCTS_A)
    return template.format(cue=cue, product=product, num=rng.randint(10000, 99999))


def generate(n: int, *, domain: str = "A", shift: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """``n`` labelled messages with balanced classes; columns ``text``, ``label``, ``domain``.

    :param domain: ``"A"`` (formal e-mail) or ``"B"`` (chat slang, new product line).
    :param shift: for domain B, how far it is from A, in [0, 1]; ignored for A.
    :param seed: same seed, same rows.
    """
    if domain not in ("A", "B"):
        raise ValueError(f"domain must be 'A' or 'B', got {domain!r}")
    if not 0.0 <= shift <= 1.0:
        raise ValueError(f"shift must be in [0, 1], got {shift}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"{seed}-{domain}")
    use_b = shift if domain == "B" else 0.0
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    rng.shuffle(labels)
    texts = [_message(rng, label, use_b) for label in labels]
    return pd.DataFrame({"text": texts, "label": labels, "domain": [domain] * n})


def write_demo_splits(output_dir: Path, *, n_train: int = 800, n_eval: int = 400, n_golden: int = 64,
                      shift: float = 1.0, seed: int = 0) -> dict[str, Path]:
    """Write ``a_train``, ``a_eval``, ``b_train``, ``b_eval`` and ``golden`` Parquet files.

    Splits use distinct seeds so no split is a copy of another; the golden set is half A, half B and fixed
    for a given seed, so champion and challenger are always judged on the same rows.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    frames = {
        "a_train": generate(n_train, domain="A", seed=seed),
        "a_eval": generate(n_eval, domain="A", seed=seed + 1),
        "b_train": generate(n_train, domain="B", shift=shift, seed=seed),
        "b_eval": generate(n_eval, domain="B", shift=shift, seed=seed + 1),
        "golden": pd.concat([generate(n_golden // 2, domain="A", seed=seed + 2),
                             generate(n_golden - n_golden // 2, domain="B", shift=shift, seed=seed + 2)],
                            ignore_index=True),
    }
    paths = {}
    for name, frame in frames.items():
        paths[name] = output_dir / f"{name}.parquet"
        frame.to_parquet(paths[name], index=False)
    return paths
