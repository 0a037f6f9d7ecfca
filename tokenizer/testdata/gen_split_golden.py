#!/usr/bin/env python3
"""Splits random strings with the DeepSeek-V3, Qwen2, Llama-3 and GPT-2
pre-tokenizer patterns using the third-party `regex` module (a backtracking
engine with real look-ahead, like Oniguruma) and writes split-golden.json:
for each case the pieces of HF's Split(behavior=Isolated) — matches and the
gaps between them. Characters are drawn from long-assigned code points so
Unicode-version differences do not matter.

Run from tokenizer/testdata: python3 gen_split_golden.py > split-golden.json
"""
import json
import random
import sys

import regex

PATTERNS = {
    "deepseek_v3_digits": r"\p{N}{1,3}",
    "deepseek_v3_cjk": "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "deepseek_v3_main": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
}

ALPHABET = [" ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u2003", "\u000b", "\u000c", "a", "b", "Z", "x",
            "é", "ß", "Ω", "ж", "ا", "ע", "1", "7", "٣", "½", "²", "Ⅻ", "中", "文", "ぁ", "カ", "ー", "한", "\u0301", "\u0308",
            "\u093e", "!", "?", ".", ",", "'", "\"", "-", "_", "$", "+", "<", "€", "©", "°", "。", "、", "「", "🦙", "😀",
            "\u200d", "'s", "'T", "'re", "'VE", "'ll", "'D", "'m"]


def pieces(pat, s):
    out, prev = [], 0
    for m in pat.finditer(s):
        if m.start() > prev:
            out.append(s[prev:m.start()])
        if m.end() > m.start():
            out.append(m.group())
        prev = m.end()
    if prev < len(s):
        out.append(s[prev:])
    return out


def main():
    rng = random.Random(11)
    cases = []
    texts = []
    for _ in range(600):
        texts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 18))))
    for name, p in PATTERNS.items():
        pat = regex.compile(p, regex.V0)
        for s in texts:
            cases.append({"pattern": name, "text": s, "pieces": pieces(pat, s)})
    json.dump({"patterns": PATTERNS, "cases": cases}, sys.stdout, ensure_ascii=False, indent=0)
    sys.stdout.write("\n")


main()
