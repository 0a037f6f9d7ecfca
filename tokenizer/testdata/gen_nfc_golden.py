#!/usr/bin/env python3
"""Writes nfc-golden.json: random strings rich in combining marks, Hangul
and composition exclusions with Python's NFC and NFD (unicodedata 14)."""
import json
import random
import unicodedata

random.seed(7)
pool = ([chr(c) for c in range(0x41, 0x7b)] + [chr(c) for c in range(0x300, 0x370)] +
        [chr(c) for c in range(0x1100, 0x1113)] + [chr(c) for c in range(0x1161, 0x1176)] +
        [chr(c) for c in range(0x11a8, 0x11c3)] + ["가", "각", "\u212b", "\u2126", "\u0344", "\u0958",
        "\u0915", "\u093c", "\u09c7", "\u09be", "\u0b47", "\u0b3e", "\u0bc6", "\u0bbe", "\u1e0b", "\u0323",
        "\u00c5", "\u00e9", "\u0f73", "\u0fb2", "\u0f80", "\u05b8", "\u05b7", "\u3099", "\u304b", "\u30cf",
        "\u309a", "\uac00", "\U0001d15e", "\U00011099", "\U000110ba", " ", "\n"])
cases = []
for n in range(400):
    s = "".join(random.choice(pool) for _ in range(random.randint(1, 12)))
    cases.append({"in": s, "nfc": unicodedata.normalize("NFC", s), "nfd": unicodedata.normalize("NFD", s)})
print(json.dumps(cases, ensure_ascii=False, indent=0))
