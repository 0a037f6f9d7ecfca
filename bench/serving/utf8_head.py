#!/usr/bin/env python3
"""Zero the lm_head rows of every token whose text is not whole UTF-8, in
place, in a Hugging Face safetensors checkpoint and in a GGUF file of the
same random-weight model, so that greedy decoding only emits tokens that
are complete UTF-8 on their own.

Why: a random-weight model samples byte-level BPE tokens that are pieces of
a multi-byte character (a lone 0x80-0xBF byte, say). llama-server runs every
streamed output, on every endpoint, through its chat-output parser, which
rejects malformed UTF-8 with "The model produced output that does not match
the expected Content-only format" (HTTP 500 or a stream error), so most
requests of a side-by-side benchmark failed. With the rows zeroed, those
tokens' logits are exactly 0 while the others are spread around 0 (std ≈ 1
for this model), so the argmax is always a whole-UTF-8 token. Both servers
load the same patched values and do the same arithmetic; only which token
wins changes.

Kept tokens: type NORMAL (1) whose GPT-2 byte-level text decodes to valid,
non-empty UTF-8. Zeroed: everything else (control, user-defined, unused,
byte tokens, partial characters, rows past the vocabulary). Idempotent.

Pure Python 3 (stdlib). Usage:
  utf8_head.py --gguf MODEL.gguf [--safetensors DIR/model.safetensors]
"""
import argparse
import json
import struct
import sys

# GGUF metadata value types.
_SCALAR = {0: '<B', 1: '<b', 2: '<H', 3: '<h', 4: '<I', 5: '<i', 6: '<f', 7: '<?', 10: '<Q', 11: '<q', 12: '<d'}
_STRING, _ARRAY = 8, 9
# GGUF tensor types stored as plain floats (zero bytes are 0.0).
_FLOAT_ESZ = {0: 4, 1: 2, 30: 2}  # F32, F16, BF16


class _Reader:
    def __init__(self, f):
        self.f = f

    def unpack(self, fmt):
        n = struct.calcsize(fmt)
        b = self.f.read(n)
        if len(b) != n:
            raise ValueError('GGUF: unexpected end of file')
        return struct.unpack(fmt, b)[0]

    def string(self):
        n = self.unpack('<Q')
        return self.f.read(n).decode('utf-8', errors='surrogateescape')

    def value(self, typ, keep=True):
        if typ in _SCALAR:
            return self.unpack(_SCALAR[typ])
        if typ == _STRING:
            return self.string()
        if typ == _ARRAY:
            et, n = self.unpack('<I'), self.unpack('<Q')
            if not keep and et in _SCALAR:
                self.f.seek(n * struct.calcsize(_SCALAR[et]), 1)
                return None
            return [self.value(et, keep) for _ in range(n)]
        raise ValueError('GGUF: unknown metadata type %d' % typ)


def read_gguf(path):
    """Returns (metadata of the tokenizer keys, {tensor: (dims, type, absolute offset)})."""
    with open(path, 'rb') as f:
        r = _Reader(f)
        if f.read(4) != b'GGUF':
            raise ValueError('%s: not a GGUF file' % path)
        version = r.unpack('<I')
        if version < 2:
            raise ValueError('%s: GGUF version %d is too old' % (path, version))
        n_tensors, n_kv = r.unpack('<Q'), r.unpack('<Q')
        meta = {}
        for _ in range(n_kv):
            key = r.string()
            typ = r.unpack('<I')
            keep = key.startswith('tokenizer.ggml.tokens') or key.startswith('tokenizer.ggml.token_type') or \
                key in ('general.alignment', 'tokenizer.ggml.model')
            v = r.value(typ, keep)
            if keep:
                meta[key] = v
        infos = {}
        for _ in range(n_tensors):
            name = r.string()
            nd = r.unpack('<I')
            dims = [r.unpack('<Q') for _ in range(nd)]
            typ, off = r.unpack('<I'), r.unpack('<Q')
            infos[name] = (dims, typ, off)
        align = meta.get('general.alignment', 32)
        base = (f.tell() + align - 1) // align * align
    return meta, {k: (d, t, base + o) for k, (d, t, o) in infos.items()}


def _byte_decoder():
    """GPT-2's byte-level alphabet, text char -> byte."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def whole_utf8_tokens(meta):
    """Ids of the NORMAL tokens whose bytes are valid, non-empty UTF-8."""
    if meta.get('tokenizer.ggml.model') != 'gpt2':
        raise ValueError('only byte-level BPE (tokenizer.ggml.model = gpt2) vocabularies are handled, got %r'
                         % meta.get('tokenizer.ggml.model'))
    tokens, types = meta['tokenizer.ggml.tokens'], meta.get('tokenizer.ggml.token_type')
    dec = _byte_decoder()
    keep = set()
    for i, tok in enumerate(tokens):
        if types is not None and types[i] != 1:
            continue
        try:
            b = bytes(dec[c] for c in tok)
            if b:
                b.decode('utf-8', errors='strict')
                keep.add(i)
        except (KeyError, UnicodeDecodeError):
            pass
    return keep


def zero_rows(path, offset, rows, row_bytes, keep):
    """Zeroes rows not in keep of a row-major matrix at offset; returns how many were nonzero before."""
    zero = bytes(row_bytes)
    changed = 0
    with open(path, 'r+b') as f:
        for t in range(rows):
            if t in keep:
                continue
            f.seek(offset + t * row_bytes)
            if f.read(row_bytes) != zero:
                f.seek(offset + t * row_bytes)
                f.write(zero)
                changed += 1
    return changed


def patch_gguf(path, keep):
    _, infos = read_gguf(path)
    if 'output.weight' not in infos:
        raise ValueError('%s: no output.weight (tied embeddings are not handled)' % path)
    dims, typ, off = infos['output.weight']
    if typ not in _FLOAT_ESZ or len(dims) != 2:
        raise ValueError('%s: output.weight type %d dims %s: want a 2-D F32/F16/BF16 tensor' % (path, typ, dims))
    hidden, vocab = dims  # GGUF dims are the HF shape reversed
    return vocab, zero_rows(path, off, vocab, hidden * _FLOAT_ESZ[typ], keep)


def patch_safetensors(path, keep):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        hdr = json.loads(f.read(n))
    e = hdr.get('lm_head.weight')
    if e is None:
        raise ValueError('%s: no lm_head.weight (sharded checkpoints: pass the shard that holds it)' % path)
    esz = {'F32': 4, 'F16': 2, 'BF16': 2}.get(e['dtype'])
    if esz is None or len(e['shape']) != 2:
        raise ValueError('%s: lm_head.weight %s %s: want a 2-D F32/F16/BF16 tensor' % (path, e['dtype'], e['shape']))
    vocab, hidden = e['shape']
    return vocab, zero_rows(path, 8 + n + e['data_offsets'][0], vocab, hidden * esz, keep)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--gguf', required=True, help='GGUF file (its vocabulary decides the rows; patched in place)')
    ap.add_argument('--safetensors', help='HF model.safetensors holding lm_head.weight (patched in place)')
    a = ap.parse_args()
    meta, _ = read_gguf(a.gguf)
    keep = whole_utf8_tokens(meta)
    ntok = len(meta['tokenizer.ggml.tokens'])
    print('vocabulary %d tokens, %d are whole UTF-8 (kept)' % (ntok, len(keep)))
    for name, fn, path in (('gguf', patch_gguf, a.gguf), ('safetensors', patch_safetensors, a.safetensors)):
        if path:
            rows, changed = fn(path, keep)
            print('%s: %s: %d lm_head rows, %d zeroed now (%d zero in all)' % (name, path, rows, changed, rows - len(keep & set(range(rows)))))
    return 0


if __name__ == '__main__':
    sys.exit(main())
